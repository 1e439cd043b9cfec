use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;
use crate::store::{
    CommandSpec, EraChoice, HealthStatus, PemSource, ProcessLimits, SCHEMA_VERSION, TlsSettings,
    Transport, UpstreamAuth,
};

const TOKEN: &str = "tok-9f8e7d6c5b4a";
const HEADER_VALUE: &str = "hdr-secret-1234";
const INLINE_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nMIIEvQ-not-a-real-key\n-----END PRIVATE KEY-----\n";

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("mcpgw.db")
}

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&db(dir)).expect("open store")
}

/// A registration that uses every field, with values that differ from the defaults.
fn full(name: &str) -> Registration {
    Registration {
        name: name.to_owned(),
        url: format!("https://{name}.example:8443/mcp"),
        transport: Transport::StreamableHttp,
        tls: TlsSettings {
            ca: Some(PemSource::Path(PathBuf::from("/etc/mcpgw/ca.pem"))),
            client_cert: Some(PemSource::Path(PathBuf::from("/etc/mcpgw/client.pem"))),
            client_key: Some(PemSource::Inline(INLINE_KEY.to_owned())),
            server_name: Some("upstream.internal".to_owned()),
        },
        auth: UpstreamAuth {
            bearer: Some(TOKEN.to_owned()),
            headers: vec![
                ("x-tenant".to_owned(), HEADER_VALUE.to_owned()),
                ("x-trace".to_owned(), "on".to_owned()),
            ],
        },
        enabled: false,
        era: EraChoice::Session,
        shared_session: true,
        command: None,
        created_at: 1_700_000_000,
        updated_at: 1_700_000_100,
        health: Health {
            status: HealthStatus::Offline,
            since: 1_700_000_050,
            last_success: Some(1_700_000_040),
            last_error: Some("connection refused".to_owned()),
            consecutive_failures: 3,
        },
    }
}

/// A registration with defaults wherever the type has them.
fn minimal(name: &str) -> Registration {
    Registration {
        name: name.to_owned(),
        url: "https://example.com/sse".to_owned(),
        transport: Transport::Sse,
        tls: TlsSettings::default(),
        auth: UpstreamAuth::default(),
        enabled: true,
        era: EraChoice::Auto,
        shared_session: false,
        command: None,
        created_at: 10,
        updated_at: 10,
        health: Health::unknown(10),
    }
}

fn assert_no_secrets(message: &str) {
    for secret in [TOKEN, HEADER_VALUE, "MIIEvQ"] {
        assert!(
            !message.contains(secret),
            "message leaks a secret: {message}"
        );
    }
}

#[test]
fn full_registration_round_trips_through_insert_get_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let full = full("alpha");
    let minimal = minimal("beta");
    store.insert(&full).unwrap();
    store.insert(&minimal).unwrap();

    assert_eq!(store.get("alpha").unwrap(), full);
    assert_eq!(store.get("beta").unwrap(), minimal);
    assert_eq!(store.list().unwrap(), vec![full, minimal]);
}

#[test]
fn list_is_ordered_by_name_not_by_insertion() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for name in ["mid", "zulu", "0first", "alpha", "a-b", "a_b"] {
        store.insert(&minimal(name)).unwrap();
    }
    let names: Vec<String> = store.list().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["0first", "a-b", "a_b", "alpha", "mid", "zulu"]);
}

#[test]
fn registrations_survive_closing_and_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.insert(&full("alpha")).unwrap();
    store.insert(&minimal("beta")).unwrap();
    store.remove("beta").unwrap();
    drop(store);

    let reopened = open(&dir);
    assert_eq!(reopened.list().unwrap(), vec![full("alpha")]);
}

#[test]
fn duplicate_insert_is_exists_and_keeps_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.insert(&full("alpha")).unwrap();

    let err = store.insert(&minimal("alpha")).unwrap_err();
    assert!(
        matches!(&err, StoreError::Exists { name } if name == "alpha"),
        "{err:?}"
    );
    assert_no_secrets(&err.to_string());
    assert_eq!(store.get("alpha").unwrap(), full("alpha"));
}

#[test]
fn missing_name_is_not_found_for_get_update_remove_and_set_health() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.insert(&minimal("present")).unwrap();

    let is_not_found =
        |err: StoreError| matches!(&err, StoreError::NotFound { name } if name == "ghost");
    assert!(is_not_found(store.get("ghost").unwrap_err()));
    assert!(is_not_found(store.update(&minimal("ghost")).unwrap_err()));
    assert!(is_not_found(store.remove("ghost").unwrap_err()));
    assert!(is_not_found(
        store.set_health("ghost", &Health::unknown(1)).unwrap_err()
    ));
    // None of them created the missing row or touched the present one.
    assert_eq!(store.list().unwrap(), vec![minimal("present")]);
}

#[test]
fn invalid_names_are_rejected_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let too_long = "a".repeat(65);
    for name in [
        "",
        "-lead",
        "_lead",
        "Upper",
        "has space",
        "a__b",
        "dot.ted",
        &too_long,
    ] {
        let err = store.insert(&minimal(name)).unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidName { name: n } if n == name),
            "{name:?}: {err:?}"
        );
        assert!(err.to_string().contains("invalid upstream name"), "{err}");
    }
    assert!(store.list().unwrap().is_empty());
    // The longest valid name is accepted.
    store.insert(&minimal(&"a".repeat(64))).unwrap();
}

#[test]
fn set_health_changes_only_the_health_fields() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let before = full("alpha");
    store.insert(&before).unwrap();

    let health = Health {
        status: HealthStatus::Online,
        since: 1_800_000_000,
        last_success: Some(1_800_000_001),
        last_error: None,
        consecutive_failures: 0,
    };
    store.set_health("alpha", &health).unwrap();

    let after = store.get("alpha").unwrap();
    assert_eq!(after.health, health);
    assert_eq!(
        Registration {
            health: before.health.clone(),
            ..after
        },
        before
    );
}

#[test]
fn update_replaces_the_configuration_but_keeps_created_at_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let original = full("alpha");
    store.insert(&original).unwrap();

    let mut edited = minimal("alpha");
    edited.created_at = 5;
    edited.updated_at = 1_900_000_000;
    store.update(&edited).unwrap();

    let stored = store.get("alpha").unwrap();
    assert_eq!(
        stored,
        Registration {
            created_at: original.created_at,
            health: original.health.clone(),
            ..edited
        }
    );
}

#[test]
fn remove_deletes_only_the_named_registration() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.insert(&minimal("one")).unwrap();
    store.insert(&minimal("two")).unwrap();
    store.remove("one").unwrap();
    assert_eq!(store.list().unwrap(), vec![minimal("two")]);
    // The name is free again.
    store.insert(&full("one")).unwrap();
}

#[test]
fn database_file_is_created_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.insert(&full("alpha")).unwrap();
    let mode = std::fs::metadata(db(&dir)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    // The WAL holds the same secrets; SQLite copies the main file's mode to it.
    let wal = dir.path().join("mcpgw.db-wal");
    let wal_mode = std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777;
    assert_eq!(wal_mode, 0o600, "wal mode {wal_mode:o}");
}

#[test]
fn connection_is_durable_wal_with_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let conn = store.conn();
    let journal: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    let synchronous: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    let foreign_keys: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    let busy: i64 = conn
        .pragma_query_value(None, "busy_timeout", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    assert_eq!(synchronous, 2, "synchronous should be FULL (2)");
    assert_eq!(foreign_keys, 1);
    assert_eq!(busy, 5000);
}

#[test]
fn database_from_a_newer_mcpgw_is_too_new_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    {
        let raw = Connection::open(db(&dir)).unwrap();
        raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }

    let err = SqliteStore::open(&db(&dir)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooNew { found, supported, .. }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION
        ),
        "{err:?}"
    );
    let raw = Connection::open(db(&dir)).unwrap();
    assert_eq!(user_version(&raw).unwrap(), SCHEMA_VERSION + 1);
}

#[test]
fn a_new_file_is_migrated_to_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let tables: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'registrations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1);
}

/// A stdio upstream: no URL, every field of its program set.
fn stdio(name: &str) -> Registration {
    Registration {
        url: String::new(),
        transport: Transport::Stdio,
        command: Some(CommandSpec {
            program: "npx".to_owned(),
            args: vec![
                "-y".to_owned(),
                "@modelcontextprotocol/server-everything".to_owned(),
            ],
            env: vec![("API_KEY".to_owned(), TOKEN.to_owned())],
            env_file: Some(PathBuf::from("/etc/mcpgw/everything.env")),
            cwd: Some(PathBuf::from("/srv")),
            isolate: true,
            inherit_env: true,
            limits: ProcessLimits {
                memory_mib: Some(512),
                open_files: Some(256),
                cpu_secs: Some(60),
            },
        }),
        ..minimal(name)
    }
}

#[test]
fn a_stdio_upstream_round_trips_and_its_debug_form_hides_env_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.insert(&stdio("everything")).unwrap();
    assert_eq!(store.get("everything").unwrap(), stdio("everything"));
    let mut changed = stdio("everything");
    if let Some(c) = changed.command.as_mut() {
        c.args.push("stdio".to_owned());
    }
    store.update(&changed).unwrap();
    assert_eq!(store.get("everything").unwrap(), changed);
    assert_no_secrets(&format!("{changed:?}"));
    assert!(format!("{changed:?}").contains("API_KEY"));
}

#[test]
fn a_stdio_transport_without_a_command_is_refused_by_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let broken = Registration {
        command: None,
        ..stdio("broken")
    };
    assert!(store.insert(&broken).is_err());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn migration_3_keeps_the_rows_of_a_version_2_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut raw = rusqlite::Connection::open(db(&dir)).unwrap();
        let tx = raw.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0].sqlite).unwrap();
        tx.execute_batch(MIGRATIONS[1].sqlite).unwrap();
        tx.pragma_update(None, "user_version", 2).unwrap();
        tx.commit().unwrap();
        let r = full("alpha");
        raw.execute(
            "INSERT INTO registrations VALUES ('alpha', ?1, 'streamable-http', ?2, ?3, 0, \
             1700000000, 1700000100, 'offline', 1700000050, 1700000040, 'connection refused', 3, \
             '2025-11-25', 1)",
            rusqlite::params![
                r.url,
                serde_json::to_string(&r.tls).unwrap(),
                serde_json::to_string(&r.auth).unwrap()
            ],
        )
        .unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.list().unwrap(), vec![full("alpha")]);
    store.insert(&stdio("everything")).unwrap();
}

#[test]
fn reopening_does_not_rerun_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.insert(&full("alpha")).unwrap();
    drop(store);

    // Re-running migration 1 would fail (the table exists), so a second open succeeding with the
    // same version and data shows it was skipped.
    let store = open(&dir);
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.list().unwrap(), vec![full("alpha")]);
    drop(store);
    let store = open(&dir);
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn two_stores_on_one_file_both_migrate_and_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir);
    let second = open(&dir);
    first.insert(&minimal("one")).unwrap();
    assert_eq!(second.get("one").unwrap(), minimal("one"));
    let err = second.insert(&minimal("one")).unwrap_err();
    assert!(matches!(err, StoreError::Exists { .. }), "{err:?}");
}

#[test]
fn a_file_that_is_not_a_database_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(db(&dir), vec![0x5a; 4096]).unwrap();
    let err = SqliteStore::open(&db(&dir)).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}

/// Overwrite one column of one row with raw SQL, bypassing the store's encoding.
fn corrupt_column(dir: &tempfile::TempDir, name: &str, column: &str, value: &str) {
    let raw = Connection::open(db(dir)).unwrap();
    let changed = raw
        .execute(
            &format!("UPDATE registrations SET {column} = ?2 WHERE name = ?1"),
            [name, value],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

#[test]
fn corrupt_json_names_registration_and_column_without_quoting_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.insert(&full("alpha")).unwrap();
    store.insert(&minimal("beta")).unwrap();
    // Wrong shape: serde_json would quote the string value in its own message.
    corrupt_column(
        &dir,
        "alpha",
        "auth",
        &format!(r#"{{"bearer":"{TOKEN}","headers":"{HEADER_VALUE}"}}"#),
    );
    // Malformed: cut off in the middle of an inline key.
    corrupt_column(&dir, "beta", "tls", r#"{"ca":{"inline":"-----BEGIN MIIEvQ"#);

    for (name, column, result) in [
        ("alpha", "auth", store.get("alpha").map(drop)),
        ("beta", "tls", store.get("beta").map(drop)),
        ("alpha", "auth", store.list().map(drop)),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, StoreError::Query { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&format!("'{name}'")), "{message}");
        assert!(message.contains(column), "{message}");
        assert_no_secrets(&message);
    }
}

#[test]
fn unknown_enum_text_is_a_query_error_naming_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.insert(&minimal("alpha")).unwrap();
    {
        // The CHECK constraints refuse bad values, so drop them the way a damaged file might.
        let raw = Connection::open(db(&dir)).unwrap();
        raw.pragma_update(None, "ignore_check_constraints", true)
            .unwrap();
        raw.execute(
            "UPDATE registrations SET transport = 'carrier-pigeon' WHERE name = 'alpha'",
            [],
        )
        .unwrap();
    }
    let err = store.get("alpha").unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Query { .. }), "{err:?}");
    assert!(
        message.contains("'alpha'") && message.contains("transport"),
        "{message}"
    );
}

#[test]
fn debug_output_shows_the_path_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.insert(&full("alpha")).unwrap();
    let debug = format!("{store:?}");
    assert!(debug.contains("mcpgw.db"), "{debug}");
    assert_no_secrets(&debug);
}

#[test]
fn a_link_at_the_database_name_is_refused_and_a_linked_directory_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let through = dir.path().join("through");
    std::os::unix::fs::symlink(&real, &through).unwrap();
    let store = SqliteStore::open(&through.join("mcpgw.db")).expect("a linked directory opens");
    store.insert(&full("a")).unwrap();
    drop(store);
    assert!(real.join("mcpgw.db").exists());

    let victim = dir.path().join("victim.db");
    let planted = real.join("planted.db");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let err = SqliteStore::open(&planted).unwrap_err().to_string();
    assert!(err.contains("planted.db"), "{err}");
    assert!(!victim.exists(), "the link's target was created");
}

#[test]
fn a_session_keeps_its_subscriptions_until_it_ends_and_touch_names_the_ended() {
    use crate::store::{StoredSession, Subscription};
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let session = |hash: &str, seen_at| StoredSession {
        id_hash: hash.to_owned(),
        owner: "client".to_owned(),
        profile: r#"{"protocolVersion":"2025-11-25"}"#.to_owned(),
        created_at: 100,
        seen_at,
        subscriptions: Vec::new(),
    };
    store.save_session(&session("a", 100)).unwrap();
    store.save_session(&session("b", 100)).unwrap();
    let sub = |uri: &str| Subscription {
        endpoint: "*".to_owned(),
        uri: uri.to_owned(),
    };
    store
        .set_subscription("a", &sub("test://one"), true)
        .unwrap();
    store
        .set_subscription("a", &sub("test://two"), true)
        .unwrap();
    store
        .set_subscription("a", &sub("test://one"), true)
        .unwrap();
    store
        .set_subscription("a", &sub("test://two"), false)
        .unwrap();
    // A subscription of a session the store does not hold is not kept.
    store
        .set_subscription("nobody", &sub("test://one"), true)
        .unwrap();
    let loaded = store.load_session("a").unwrap().unwrap();
    assert_eq!(loaded.subscriptions, vec![sub("test://one")]);
    assert_eq!(loaded.owner, "client");
    assert!(store.load_session("nobody").unwrap().is_none());

    // Touched: the held ones are marked, the one that ended is named.
    store.end_session("b").unwrap();
    let gone = store
        .touch_sessions(&["a".to_owned(), "b".to_owned()], 200)
        .unwrap();
    assert_eq!(gone, vec!["b".to_owned()]);
    assert_eq!(store.load_session("a").unwrap().unwrap().seen_at, 200);
    // Not moved back by an older use.
    store.touch_sessions(&["a".to_owned()], 150).unwrap();
    assert_eq!(store.load_session("a").unwrap().unwrap().seen_at, 200);

    // Expiry takes the session and its subscriptions with it.
    assert_eq!(store.expire_sessions(199).unwrap(), 0);
    assert_eq!(store.expire_sessions(201).unwrap(), 1);
    assert!(store.load_session("a").unwrap().is_none());
    store.save_session(&session("a", 300)).unwrap();
    assert!(
        store
            .load_session("a")
            .unwrap()
            .unwrap()
            .subscriptions
            .is_empty()
    );
}
