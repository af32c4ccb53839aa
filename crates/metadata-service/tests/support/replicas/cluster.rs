//! The databases of the replica tests: the test binary's shared cluster
//! ([`pg::cluster`]) for most, a cluster of a test's own ([`OwnCluster`]) for the tests
//! that stop PostgreSQL under the replicas; database names, schema versions, and the
//! password role's database and password file.

use crate::support::pg;

/// A PostgreSQL cluster of a test's own, to stop (as a crash would) and start again
/// under running replicas: [`pg::cluster`] is shared by the tests running at the same
/// time. A [`pg::Instance`] in `/tmp/bp-rpg-*`, removed when dropped.
pub struct OwnCluster(pg::Instance);

impl OwnCluster {
    /// A new cluster, started.
    pub fn new() -> OwnCluster {
        let server = pg::Instance::init("bp-rpg");
        server.start();
        OwnCluster(server)
    }

    /// Starts it again after [`OwnCluster::stop`].
    pub fn start(&self) {
        self.0.start();
    }

    /// Stops it as a crash would (`-m immediate`): every connection cut.
    pub fn stop(&self) {
        self.0.stop();
    }

    pub fn url(&self, name: &str) -> String {
        self.0.url_as(name, "postgres")
    }

    /// Creates the empty database `name`; its URL.
    pub fn database(&self, name: &str) -> String {
        self.0.create_database(name);
        self.url(name)
    }

    pub fn psql(&self, name: &str, sql: &str) -> String {
        self.0.psql(name, sql)
    }
}

/// The database name of a URL of `pg::Cluster` or [`OwnCluster`].
pub fn db_name(url: &str) -> &str {
    url.split('?').next().unwrap().rsplit('/').next().unwrap()
}

/// The password of `pg::PASSWORD_ROLE`: it must appear in no log.
pub const PASSWORD: &str = "right-Pa55-c0ffee-replicas";
pub const WRONG: &str = "Wr0ng-Pa55-5ecret-d00d";

pub fn password_db(hint: &str) -> (String, &'static pg::Cluster) {
    let cluster = pg::cluster();
    cluster.password_role(PASSWORD);
    let url = cluster.database(hint);
    (db_name(&url).to_owned(), cluster)
}

pub fn password_file(password: &str) -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpassword");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = file.display().to_string();
    (dir, path)
}

/// `(version, rows)` of `bulletproof_schema_version`, by version.
pub fn schema_versions(url: &str) -> Vec<(i64, i64)> {
    pg::cluster()
        .psql(
            db_name(url),
            "SELECT version, count(*) FROM bulletproof_schema_version GROUP BY version ORDER BY 1",
        )
        .lines()
        .map(|l| l.split_once('|').unwrap())
        .map(|(v, c)| (v.parse().unwrap(), c.parse().unwrap()))
        .collect()
}
