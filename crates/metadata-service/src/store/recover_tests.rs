//! Tests of the start-up recovery (`recover.rs`).

use super::*;
use crate::ingest::Prepared;
use crate::store::{SignaturePut, Store};
use bytes::Bytes;

fn doc(image_id: &str, entries: usize) -> Vec<u8> {
    let items: Vec<String> = (0..entries)
        .map(|i| {
            format!(
                "{{\"path\":\"/usr/lib/f{i:06}\",\"sha256\":\"{i:064x}\",\"mode\":420,\
                 \"uid\":0,\"gid\":0,\"kind\":\"file\",\"size\":{i}}}"
            )
        })
        .collect();
    format!(
        "{{\"image_id\":\"{image_id}\",\"timestamp\":\"2026-11-23T07:31:43Z\",\"entries\":[{}]}}\n",
        items.join(",\n")
    )
    .into_bytes()
}

fn prepared(bytes: &[u8], signature: Option<&[u8]>) -> Prepared {
    let meta = ingest::validate(bytes).unwrap();
    let mut prepared = ingest::prepare(meta, Bytes::copy_from_slice(bytes));
    prepared.signature = signature.map(<[u8]>::to_vec);
    prepared
}

fn sig(n: u8) -> Vec<u8> {
    format!(
        "untrusted comment: test\nRWQ{}\ntrusted comment: image_id:x n:{n}\nAAA{}\n",
        "A".repeat(n as usize),
        "B".repeat(n as usize)
    )
    .into_bytes()
}

fn lose_index(dir: &Path) {
    std::fs::remove_dir_all(dir.join("index")).unwrap();
}

fn lost_found(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("lost+found"))
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn rfc3339_of_known_instants() {
    let at = |secs| rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(secs)).unwrap();
    assert_eq!(at(0), "1970-01-01T00:00:00Z");
    assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    assert!(rfc3339(UNIX_EPOCH - std::time::Duration::from_secs(1)).is_none());
    let now = rfc3339(SystemTime::now()).unwrap();
    integrity_common::manifest::validate_timestamp(&now).unwrap();
}

#[test]
fn names_this_store_writes() {
    let sha = "a".repeat(64);
    assert!(parse_name(&format!("{sha}.json")).is_some());
    assert!(parse_name(&format!("{sha}.json.gz")).is_some());
    assert!(parse_name(&format!("{sha}.json.zst")).is_some());
    assert!(parse_name(&format!("{sha}.minisig")).is_some());
    assert!(parse_name(&format!("{sha}.json.bz2")).is_none());
    assert!(parse_name(&format!("{}.json", "A".repeat(64))).is_none());
    assert!(parse_name(&format!("{}.json", "a".repeat(63))).is_none());
    assert!(parse_name("README").is_none());
}

#[test]
fn a_lost_index_is_rebuilt_with_forms_and_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let big = doc("img-big", 300);
    let small = doc("img-small", 1);
    let first = {
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.recovery(), &Recovery::default());
        store.insert(&prepared(&big, Some(&sig(1)))).unwrap();
        store.insert(&prepared(&small, None)).unwrap();
        assert_eq!(
            store.put_signature("img-small", &sig(2)).unwrap(),
            SignaturePut::Created
        );
        store.list().unwrap()
    };
    lose_index(dir.path());
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(
        store.recovery(),
        &Recovery {
            rebuilt: 2,
            signatures_restored: 2,
            ..Recovery::default()
        }
    );
    let again = store.list().unwrap();
    assert_eq!(again.len(), 2);
    for (before, after) in first.iter().zip(&again) {
        let BaselineMeta { stored_at, .. } = after;
        assert_eq!(
            before,
            &BaselineMeta {
                stored_at: stored_at.clone(),
                ..after.clone()
            }
        );
        integrity_common::manifest::validate_timestamp(stored_at).unwrap();
    }
    assert!(again[0].gzip_size.is_some() && again[0].zstd_size.is_some());
    assert_eq!(
        store.body("img-big", Encoding::Identity).unwrap().unwrap(),
        big
    );
    assert!(store.body("img-big", Encoding::Zstd).unwrap().is_some());
    assert_eq!(&store.signature("img-big").unwrap().unwrap()[..], sig(1));
    assert_eq!(&store.signature("img-small").unwrap().unwrap()[..], sig(2));
    drop(store);
    // Once rebuilt, nothing more to do.
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(store.recovery(), &Recovery::default());
    assert!(lost_found(dir.path()).is_empty());
}

#[test]
fn a_replaced_signature_survives_in_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let body = doc("img-r", 3);
    let sha = Sha256Digest::of(&body).to_hex();
    {
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store.insert(&prepared(&body, None)).unwrap();
        assert_eq!(
            store.put_signature("img-r", &sig(1)).unwrap(),
            SignaturePut::Created
        );
        assert_eq!(
            store.put_signature("img-r", &sig(2)).unwrap(),
            SignaturePut::Conflict
        );
        assert_eq!(
            store.replace_signature("img-r", &sig(2)).unwrap(),
            SignaturePut::Created
        );
        assert_eq!(
            store.replace_signature("img-r", &sig(2)).unwrap(),
            SignaturePut::Unchanged
        );
        assert_eq!(
            store.replace_signature("img-none", &sig(2)).unwrap(),
            SignaturePut::NoBaseline
        );
        let file = dir.path().join(format!("objects/{sha}.minisig"));
        assert_eq!(std::fs::read(file).unwrap(), sig(2));
    }
    lose_index(dir.path());
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(&store.signature("img-r").unwrap().unwrap()[..], sig(2));
}

#[test]
fn signature_files_and_records_are_reconciled() {
    let dir = tempfile::tempdir().unwrap();
    let body = doc("img-s", 3);
    let sha = Sha256Digest::of(&body).to_hex();
    let file = dir.path().join(format!("objects/{sha}.minisig"));
    {
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store.insert(&prepared(&body, Some(&sig(1)))).unwrap();
    }
    // A store from before signature files: the record gets its file.
    std::fs::remove_file(&file).unwrap();
    {
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.recovery(), &Recovery::default());
        assert_eq!(std::fs::read(&file).unwrap(), sig(1));
    }
    // A file that differs from the record (a replacement whose record was never
    // committed, or planted): the record wins, the file goes aside.
    std::fs::write(&file, sig(3)).unwrap();
    {
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.recovery().lost_found, 1);
        assert_eq!(&store.signature("img-s").unwrap().unwrap()[..], sig(1));
        assert_eq!(std::fs::read(&file).unwrap(), sig(1));
    }
    // A file that is no signature goes aside; the record's own file comes back.
    std::fs::write(&file, b"garbage").unwrap();
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(store.recovery().lost_found, 1);
    assert_eq!(&store.signature("img-s").unwrap().unwrap()[..], sig(1));
    assert_eq!(std::fs::read(&file).unwrap(), sig(1));
    assert_eq!(
        lost_found(dir.path()),
        [format!("{sha}.minisig"), format!("{sha}.minisig.1")]
    );
}

#[test]
fn what_cannot_be_told_apart_or_verified_goes_aside() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let kept = doc("img-kept", 300);
    {
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store.insert(&prepared(&kept, None)).unwrap();
    }
    let plant = |bytes: &[u8], suffix: &str| {
        let name = format!("{}.{suffix}", Sha256Digest::of(bytes).to_hex());
        std::fs::write(objects.join(&name), bytes).unwrap();
        name
    };
    // Two bodies claiming one id that is not indexed: neither is served.
    let twin_a = plant(&doc("img-twin", 1), "json");
    let twin_b = plant(&doc("img-twin", 2), "json");
    // Other bytes for an indexed id.
    let other = plant(&doc("img-kept", 5), "json");
    // A good body with a compressed form that is not it: the body is rebuilt
    // without that form.
    let good = doc("img-good", 50);
    let good_name = plant(&good, "json");
    let bad_gz = good_name.replace(".json", ".json.gz");
    std::fs::write(objects.join(&bad_gz), b"not gzip").unwrap();
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(store.recovery().rebuilt, 1);
    assert_eq!(store.recovery().lost_found, 4);
    let mut expected = vec![twin_a, twin_b, other, bad_gz];
    expected.sort();
    assert_eq!(lost_found(dir.path()), expected);
    assert!(store
        .body("img-twin", Encoding::Identity)
        .unwrap()
        .is_none());
    assert_eq!(
        store.body("img-good", Encoding::Identity).unwrap().unwrap(),
        good
    );
    assert!(store.body("img-good", Encoding::Gzip).unwrap().is_none());
    assert_eq!(
        store.body("img-kept", Encoding::Identity).unwrap().unwrap(),
        kept
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("lost+found"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}
