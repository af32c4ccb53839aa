//! A throwaway PostgreSQL cluster for the tests: `initdb` and `pg_ctl` in a temp dir,
//! listening only on a unix socket in that dir, one per test binary ([`cluster`]), a
//! fresh database per test ([`Cluster::database`]).
//!
//! Nothing is installed here: without the server binaries the tests fail with a
//! message that says what to install (`scripts/test` installs Debian's `postgresql`).
//! PostgreSQL refuses to run as root, so as root the cluster runs as `nobody`.
//!
//! Nothing is left running: a watchdog shell, started before the server, reads its
//! stdin, a pipe held by this process; when the test binary exits (or is killed, or an
//! [`Instance`] is dropped) the pipe closes, and the watchdog stops the server
//! (`pg_ctl stop -m immediate`) and removes the temp dir.
//!
//! [`Instance`] is one such server, shared by [`Cluster`] and by the tests that need a
//! server of their own to stop and start again (`tests/support/replicas/cluster.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The port: only the name of the socket file, in a directory of our own.
const PORT: u16 = 5432;

/// The one role that authenticates with a password (every other one is trusted); see
/// [`Cluster::password_role`].
pub const PASSWORD_ROLE: &str = "bp_password";

pub struct Cluster {
    server: Instance,
}

/// The cluster of this test binary, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

/// The directory of `initdb` and `pg_ctl`: `$PG_BIN`, Debian's
/// `/usr/lib/postgresql/<newest>/bin`, or the `PATH`.
fn server_bin() -> PathBuf {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            has_tools(&dir),
            "PG_BIN={} has no initdb and pg_ctl: the store tests start a throwaway \
             PostgreSQL cluster with them",
            dir.display()
        );
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if has_tools(&dir) {
            return dir;
        }
    }
    panic!(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: the store tests \
         start a throwaway cluster with them. Install Debian's `postgresql` package \
         (scripts/test does: apt-get install postgresql), or set PG_BIN to their directory"
    );
}

pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // `/proc/self` belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// A command that runs `program` as the cluster's owner: `nobody` when we are root;
/// in `/` (which `nobody` can read) unless told otherwise.
fn as_owner(program: &Path) -> Command {
    let mut command = if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(program);
        command
    } else {
        Command::new(program)
    };
    command.current_dir("/");
    command
}

/// Runs `command` (no stdin) to success, or panics with `what` and its output; its
/// stdout.
fn run(command: Command, what: &str) -> String {
    output(command, what).unwrap_or_else(|failure| panic!("{failure}"))
}

/// Runs `command` (no stdin): its stdout, or, when it fails, a message naming `what`
/// with its exit status and output.
fn output(mut command: Command, what: &str) -> Result<String, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("{what}: cannot run: {error}"));
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One PostgreSQL server of our own: a data directory made by `initdb` (as the owner,
/// see [`as_owner`]) in a temp dir under `/tmp`, a unix socket in that dir, and the
/// watchdog that stops the server and removes the dir when the instance is dropped or
/// the process is gone.
pub struct Instance {
    bin: PathBuf,
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    /// The watchdog and the pipe that keeps it waiting.
    watchdog: Option<(Child, ChildStdin)>,
}

impl Instance {
    /// A new data directory in `/tmp/PREFIX-PID-NANOS`, not started yet ([`start`]).
    ///
    /// [`start`]: Instance::start
    pub fn init(prefix: &str) -> Instance {
        let bin = server_bin();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        // Short and under /tmp: a socket path is limited to about 100 bytes.
        let root = PathBuf::from(format!("/tmp/{prefix}-{}-{nanos}", std::process::id()));
        let data = root.join("data");
        let socket_dir = root.join("sock");
        std::fs::create_dir_all(&socket_dir).expect("create the cluster's temp dir");
        if is_root() {
            let mut chown = Command::new("chown");
            chown.args(["-R", "nobody:nogroup"]).arg(&root);
            run(chown, "chown of the cluster's temp dir");
        }
        // The watchdog first: whatever happens from here on, the process's exit stops
        // the server and removes the dir.
        let stop_as = if is_root() {
            "setpriv --reuid=nobody --regid=nogroup --clear-groups --"
        } else {
            ""
        };
        let mut watchdog = Command::new("sh")
            .args([
                "-c",
                "trap '' INT TERM HUP; read _; \
                 $PG_AS \"$PG_CTL\" -D \"$PG_DATA\" stop -m immediate -w >/dev/null 2>&1; \
                 rm -rf \"$PG_ROOT\"",
            ])
            .env("PG_AS", stop_as)
            .env("PG_CTL", bin.join("pg_ctl"))
            .env("PG_DATA", &data)
            .env("PG_ROOT", &root)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the cluster's watchdog (sh)");
        let pipe = watchdog.stdin.take().unwrap();
        let instance = Instance {
            bin,
            root,
            data,
            socket_dir,
            watchdog: Some((watchdog, pipe)),
        };

        let mut initdb = as_owner(&instance.bin.join("initdb"));
        initdb
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .arg("-D")
            .arg(&instance.data)
            .current_dir(&instance.root);
        run(initdb, "initdb");
        instance
    }

    /// The data directory (`pg_hba.conf` and the rest).
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// Starts the server (`pg_ctl start -w`); panics with its log if it does not.
    pub fn start(&self) {
        self.start_with("");
    }

    /// Starts the server with more `-c` settings (`-c ssl=on …`).
    pub fn start_with(&self, settings: &str) {
        let log = self.root.join("server.log");
        let mut pg_ctl = as_owner(&self.bin.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-k {} -p {PORT} -c listen_addresses='' -c fsync=off -c max_connections=300 {settings}",
                self.socket_dir.display()
            ))
            .arg("start")
            .current_dir(&self.root);
        if let Err(failure) = output(pg_ctl, "pg_ctl start") {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{failure}\nserver log:\n{log}");
        }
    }

    /// Stops the server as a crash would (`-m immediate`): every connection cut.
    pub fn stop(&self) {
        let mut pg_ctl = as_owner(&self.bin.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate", "-w"]);
        run(pg_ctl, "pg_ctl stop");
    }

    /// A URL of database `name` (which may not exist) as role `user`.
    pub fn url_as(&self, name: &str, user: &str) -> String {
        format!(
            "postgresql:///{name}?host={}&port={PORT}&user={user}",
            self.socket_dir.display()
        )
    }

    /// Creates the empty database `name`.
    pub fn create_database(&self, name: &str) {
        let mut createdb = Command::new(self.bin.join("createdb"));
        createdb.arg("-h").arg(&self.socket_dir).args([
            "-p",
            &PORT.to_string(),
            "-U",
            "postgres",
            name,
        ]);
        run(createdb, "createdb");
    }

    /// Runs `sql` in database `name` with `psql` (stops at the first error); its output.
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &PORT.to_string(),
                "-U",
                "postgres",
                "-X",
                "-q",
                "-A",
                "-t",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-d", name, "-c", sql]);
        run(psql, &format!("psql {sql:?}"))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Closing the pipe is the watchdog's signal; then wait until it is done.
        if let Some((mut child, mut pipe)) = self.watchdog.take() {
            let _ = pipe.flush();
            drop(pipe);
            let _ = child.wait();
        }
    }
}

impl Cluster {
    fn start() -> Cluster {
        let server = Instance::init("bp-pg");
        // Every role is trusted but one, PASSWORD_ROLE, which must give its password.
        let hba = server.data().join("pg_hba.conf");
        let trusted = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(
            &hba,
            format!("local all {PASSWORD_ROLE} scram-sha-256\n{trusted}"),
        )
        .expect("write pg_hba.conf");
        server.start();
        Cluster { server }
    }

    /// A URL of the cluster's database `name` (which may not exist).
    pub fn url(&self, name: &str) -> String {
        self.server.url_as(name, "postgres")
    }

    /// A new, empty database (its name from `hint` and a counter); its URL.
    pub fn database(&self, hint: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let hint: String = hint
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(40)
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!("t{}_{hint}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.server.create_database(&name);
        self.url(&name)
    }

    /// Creates [`PASSWORD_ROLE`] with `password` (once per cluster), without any
    /// privilege on the databases but to connect.
    pub fn password_role(&self, password: &str) {
        static CREATED: OnceLock<()> = OnceLock::new();
        CREATED.get_or_init(|| {
            self.psql(
                "postgres",
                &format!("CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{password}'"),
            );
        });
    }

    /// The URL of database `name` as [`PASSWORD_ROLE`], with `password` in it if any.
    pub fn password_url(&self, name: &str, password: Option<&str>) -> String {
        let password = password.map_or(String::new(), |p| format!("&password={p}"));
        format!("{}{password}", self.server.url_as(name, PASSWORD_ROLE))
    }

    /// Runs `sql` in database `name` with `psql` (stops at the first error); its output.
    pub fn psql(&self, name: &str, sql: &str) -> String {
        self.server.psql(name, sql)
    }
}
