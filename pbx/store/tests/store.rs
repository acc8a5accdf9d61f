//! The same tests, run against SQLite (a fresh temp file each) and PostgreSQL (a fresh
//! database each, on the server named by `SWITCHBOARD_TEST_POSTGRES_URL`; start one with
//! `eval "export $(bash .ci/postgres.sh)"`). Without that variable the PostgreSQL half is
//! skipped with a notice, except under `CI=true` where it fails.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection as _;
use switchboard_sip::digest::{self, Algorithm, Credentials, NonceManager, Qop, Verdict};
use switchboard_store::{
    Binding, CallHistoryRecord, CallLegRecord, CallQuery, CallRecord, NewUser, Store, StoreError,
};

const POSTGRES_URL_VAR: &str = "SWITCHBOARD_TEST_POSTGRES_URL";

enum Cleanup {
    SqliteFile(PathBuf),
    PostgresDatabase { admin_url: String, name: String },
}

struct TestDb {
    store: Store,
    url: String,
    cleanup: Cleanup,
}

fn unique_name(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "sb_{test}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `postgres://u@h:p/db?x` with another database name.
fn with_database(url: &str, name: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (url, None),
    };
    let scheme_end = main.find("://").map_or(0, |i| i + 3);
    let base = match main[scheme_end..].find('/') {
        Some(i) => &main[..scheme_end + i],
        None => main,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

fn postgres_admin_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{POSTGRES_URL_VAR} is not set and CI=true: the PostgreSQL tests must run \
                     in CI (start a server with: eval \"export $(bash .ci/postgres.sh)\")"
                );
            }
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                // Straight to stderr: libtest would swallow eprintln! of a passing test.
                let _ = writeln!(
                    std::io::stderr(),
                    "\nSKIPPED: PostgreSQL store tests ({POSTGRES_URL_VAR} is not set; start a \
                     throwaway server with: eval \"export $(bash .ci/postgres.sh)\")\n"
                );
            });
            None
        }
    }
}

impl TestDb {
    async fn sqlite(test: &str) -> TestDb {
        let path = std::env::temp_dir().join(format!("{}.db", unique_name(test)));
        let url = format!("sqlite://{}", path.display());
        let store = Store::open(&url).await.expect("open sqlite");
        TestDb {
            store,
            url,
            cleanup: Cleanup::SqliteFile(path),
        }
    }

    async fn postgres(test: &str) -> Option<TestDb> {
        let admin_url = postgres_admin_url()?;
        let name = unique_name(test).to_ascii_lowercase();
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to SWITCHBOARD_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        let store = Store::open(&url).await.expect("open postgres");
        Some(TestDb {
            store,
            url,
            cleanup: Cleanup::PostgresDatabase { admin_url, name },
        })
    }

    /// A second, independent handle on the same database (another process's view).
    async fn reopen(&self) -> Store {
        Store::open(&self.url).await.expect("reopen")
    }

    async fn finish(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::SqliteFile(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::PostgresDatabase { admin_url, name } => {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut admin)
                            .await;
                    admin.close().await.ok();
                }
            }
        }
    }
}

/// Runs each named `async fn(&TestDb)` once on SQLite and once on PostgreSQL.
macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::TestDb::sqlite(stringify!($test)).await;
                super::$test(&db).await;
                db.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = super::TestDb::postgres(stringify!($test)).await else {
                    return;
                };
                super::$test(&db).await;
                db.finish().await;
            }
        }
    )*};
}

on_both_databases!(
    users_add_list_remove,
    user_conflicts,
    missing_users,
    invalid_users_are_refused,
    revision_bumps_with_every_user_change,
    stored_ha1_is_not_the_password_and_verifies_digest,
    bindings_upsert_load_delete,
    bindings_expire_and_are_purged,
    removing_a_user_removes_their_bindings,
    reopening_keeps_data,
    schema_has_the_expected_columns,
    concurrent_writer_and_reader,
    recordings_are_stored_against_the_call,
    call_records_are_written_whole_and_queried_by_user_and_time,
    a_call_record_is_all_or_nothing,
);

const REALM: &str = "pbx.example";

fn user(name: &str, extension: Option<&str>, password: &str) -> NewUser {
    NewUser {
        name: name.into(),
        password: password.into(),
        extension: extension.map(Into::into),
        display_name: Some(format!("User {name}")),
        realm: REALM.into(),
    }
}

fn binding(aor: &str, contact: &str, expires_at: i64) -> Binding {
    Binding {
        aor: aor.into(),
        contact: contact.into(),
        instance: None,
        call_id: format!("call-{aor}-{contact}"),
        cseq: 1,
        expires_at,
        received: "udp:127.0.0.1:5062".into(),
        path: None,
        user_agent: Some("test".into()),
    }
}

async fn users_add_list_remove(db: &TestDb) {
    let s = &db.store;
    assert!(s.list_users().await.unwrap().is_empty());
    s.add_user(&user("bob", Some("102"), "pw-b")).await.unwrap();
    s.add_user(&user("alice", Some("101"), "pw-a"))
        .await
        .unwrap();
    s.add_user(&NewUser {
        display_name: None,
        ..user("Zed", None, "pw-z")
    })
    .await
    .unwrap();

    let users = s.list_users().await.unwrap();
    let names: Vec<_> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        ["Zed", "alice", "bob"],
        "byte order on both databases"
    );
    let alice = &users[1];
    assert_eq!(alice.extension.as_deref(), Some("101"));
    assert_eq!(alice.display_name.as_deref(), Some("User alice"));
    assert_eq!(alice.realm, REALM);
    assert_eq!(users[0].extension, None);
    assert_eq!(users[0].display_name, None);
    assert_eq!(s.get_user("alice").await.unwrap().as_ref(), Some(alice));
    assert_eq!(s.get_user("nobody").await.unwrap(), None);

    s.set_password("alice", "new", "other.realm").await.unwrap();
    let alice = s.get_user("alice").await.unwrap().unwrap();
    assert_eq!(alice.realm, "other.realm");
    assert_eq!(
        alice.ha1_md5,
        digest::ha1(Algorithm::Md5, "alice", "other.realm", "new")
    );

    s.remove_user("bob").await.unwrap();
    let names: Vec<_> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["Zed", "alice"]);
}

async fn user_conflicts(db: &TestDb) {
    let s = &db.store;
    s.add_user(&user("alice", Some("101"), "pw")).await.unwrap();

    let err = s
        .add_user(&user("alice", Some("201"), "pw"))
        .await
        .unwrap_err();
    match &err {
        StoreError::Conflict(msg) => assert!(msg.contains("user \"alice\""), "{msg}"),
        other => panic!("expected a name conflict, got {other:?}"),
    }
    let err = s
        .add_user(&user("carol", Some("101"), "pw"))
        .await
        .unwrap_err();
    match &err {
        StoreError::Conflict(msg) => assert!(msg.contains("extension \"101\""), "{msg}"),
        other => panic!("expected an extension conflict, got {other:?}"),
    }
    // Users without an extension do not conflict with each other.
    s.add_user(&user("dave", None, "pw")).await.unwrap();
    s.add_user(&user("erin", None, "pw")).await.unwrap();
    // A failed insert leaves nothing behind.
    assert_eq!(s.list_users().await.unwrap().len(), 3);
    assert_eq!(s.users_revision().await.unwrap(), 3);
}

async fn missing_users(db: &TestDb) {
    let s = &db.store;
    assert!(matches!(
        s.set_password("ghost", "pw", REALM).await,
        Err(StoreError::NotFound(m)) if m.contains("ghost")
    ));
    assert!(matches!(
        s.remove_user("ghost").await,
        Err(StoreError::NotFound(m)) if m.contains("ghost")
    ));
    assert_eq!(
        s.users_revision().await.unwrap(),
        0,
        "failures bump nothing"
    );
}

async fn invalid_users_are_refused(db: &TestDb) {
    let s = &db.store;
    for name in ["", "al ice", "alice@pbx.example", "sip:alice"] {
        assert!(
            matches!(
                s.add_user(&user(name, None, "pw")).await,
                Err(StoreError::InvalidName { .. })
            ),
            "{name:?}"
        );
    }
    for ext in ["", "10a", "1 0"] {
        assert!(
            matches!(
                s.add_user(&user("alice", Some(ext), "pw")).await,
                Err(StoreError::InvalidExtension { .. })
            ),
            "{ext:?}"
        );
    }
    assert!(matches!(
        s.add_user(&user("alice", None, "")).await,
        Err(StoreError::InvalidField {
            field: "password",
            ..
        })
    ));
    s.add_user(&user("alice", Some("*97#+1"), "pw"))
        .await
        .unwrap();
    assert_eq!(s.users_revision().await.unwrap(), 1);
}

async fn revision_bumps_with_every_user_change(db: &TestDb) {
    let s = &db.store;
    assert_eq!(s.users_revision().await.unwrap(), 0);
    s.add_user(&user("alice", None, "pw")).await.unwrap();
    assert_eq!(s.users_revision().await.unwrap(), 1);
    s.set_password("alice", "pw2", REALM).await.unwrap();
    assert_eq!(s.users_revision().await.unwrap(), 2);
    // Bindings are not user changes.
    s.save_binding(&binding("alice", "sip:alice@10.0.0.1", i64::MAX))
        .await
        .unwrap();
    assert_eq!(s.users_revision().await.unwrap(), 2);
    s.remove_user("alice").await.unwrap();
    assert_eq!(s.users_revision().await.unwrap(), 3);
    // Another handle (the server, while the CLI writes) sees the same counter.
    let other = db.reopen().await;
    assert_eq!(other.users_revision().await.unwrap(), 3);
    other.close().await;
}

async fn stored_ha1_is_not_the_password_and_verifies_digest(db: &TestDb) {
    let s = &db.store;
    let password = "correct horse";
    s.add_user(&user("alice", Some("101"), password))
        .await
        .unwrap();
    let alice = s.get_user("alice").await.unwrap().unwrap();
    for ha1 in [&alice.ha1_md5, &alice.ha1_sha256] {
        assert_ne!(ha1, password);
        assert!(!ha1.contains(password));
        assert!(ha1
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
    assert_eq!(alice.ha1_md5.len(), 32);
    assert_eq!(alice.ha1_sha256.len(), 64);
    assert_eq!(alice.ha1(Algorithm::Md5), alice.ha1_md5);
    assert_eq!(alice.ha1(Algorithm::Sha256Sess), alice.ha1_sha256);

    // A client answers a challenge; the server checks it against the stored HA1 only.
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut nonces = NonceManager::new(b"test secret".to_vec());
    for alg in [Algorithm::Md5, Algorithm::Sha256] {
        let creds = client_answer(&mut nonces, alg, "alice", password, now);
        let stored = s.get_user(&creds.username).await.unwrap().unwrap();
        assert!(digest::verify(&creds, "REGISTER", stored.ha1(alg)));
        assert_eq!(
            nonces.authenticate(&creds, "REGISTER", stored.ha1(alg), now),
            Verdict::Authorized
        );
        let wrong = client_answer(&mut nonces, alg, "alice", "wrong", now);
        assert_eq!(
            nonces.authenticate(&wrong, "REGISTER", stored.ha1(alg), now),
            Verdict::BadResponse
        );
    }

    // After a password change the old password no longer works, the new one does.
    s.set_password("alice", "new secret", REALM).await.unwrap();
    let stored = s.get_user("alice").await.unwrap().unwrap();
    let old = client_answer(&mut nonces, Algorithm::Md5, "alice", password, now);
    assert!(!digest::verify(&old, "REGISTER", &stored.ha1_md5));
    let new = client_answer(&mut nonces, Algorithm::Md5, "alice", "new secret", now);
    assert!(digest::verify(&new, "REGISTER", &stored.ha1_md5));
}

/// What a phone sends after a challenge, parsed back the way the registrar reads it.
fn client_answer(
    nonces: &mut NonceManager,
    alg: Algorithm,
    user: &str,
    password: &str,
    now: SystemTime,
) -> Credentials {
    let nonce = nonces.issue(now);
    let mut creds = Credentials {
        username: user.into(),
        realm: REALM.into(),
        nonce,
        uri: format!("sip:{REALM}"),
        response: String::new(),
        algorithm: alg,
        cnonce: Some("abcdef".into()),
        opaque: None,
        qop: Some(Qop::Auth),
        nc: Some("00000001".into()),
    };
    let client_ha1 = digest::ha1(alg, user, REALM, password);
    creds.response = digest::expected_response(&creds, "REGISTER", &client_ha1);
    let header = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", \
         algorithm={}, cnonce=\"abcdef\", qop=auth, nc=00000001",
        creds.username, creds.realm, creds.nonce, creds.uri, creds.response, alg
    );
    Credentials::parse(&header).unwrap()
}

async fn bindings_upsert_load_delete(db: &TestDb) {
    let s = &db.store;
    let now = 1_000_000;
    let mut a1 = binding("alice", "sip:alice@10.0.0.1:5060", now + 3600);
    a1.instance = Some("<urn:uuid:00000000-0000-1000-8000-000a95a0e128>".into());
    a1.path = Some("<sip:edge.example;lr>".into());
    let a2 = binding("alice", "sip:alice@10.0.0.2:5060;transport=tcp", now + 60);
    let b1 = binding("bob", "sip:bob@10.0.0.3", now + 120);
    for b in [&b1, &a2, &a1] {
        s.save_binding(b).await.unwrap();
    }
    assert_eq!(
        s.load_bindings(now).await.unwrap(),
        vec![a1.clone(), a2.clone(), b1.clone()]
    );

    // Upsert: a refresh replaces the row of the same (aor, contact).
    let mut refreshed = a2.clone();
    refreshed.cseq = 2;
    refreshed.expires_at = now + 7200;
    refreshed.call_id = "new-call-id".into();
    refreshed.received = "tcp:192.0.2.7:40000".into();
    refreshed.user_agent = None;
    refreshed.instance = Some("<urn:uuid:1>".into());
    s.save_binding(&refreshed).await.unwrap();
    assert_eq!(
        s.load_bindings(now).await.unwrap(),
        vec![a1.clone(), refreshed.clone(), b1.clone()]
    );

    s.delete_binding("alice", &a1.contact).await.unwrap();
    // Deleting what is not there is not an error.
    s.delete_binding("alice", &a1.contact).await.unwrap();
    assert_eq!(
        s.load_bindings(now).await.unwrap(),
        vec![refreshed, b1.clone()]
    );
    s.delete_bindings_of("alice").await.unwrap();
    assert_eq!(s.load_bindings(now).await.unwrap(), vec![b1]);
}

async fn bindings_expire_and_are_purged(db: &TestDb) {
    let s = &db.store;
    let now = 2_000_000;
    s.save_binding(&binding("alice", "sip:a@1", now + 10))
        .await
        .unwrap();
    s.save_binding(&binding("alice", "sip:a@2", now + 20))
        .await
        .unwrap();
    assert_eq!(s.load_bindings(now).await.unwrap().len(), 2);
    // At expires_at a binding is gone (RFC 3261 §10.3: expires counts down to zero).
    let left = s.load_bindings(now + 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].contact, "sip:a@2");
    // The purge deleted the row: an earlier clock does not bring it back.
    assert_eq!(s.load_bindings(now).await.unwrap().len(), 1);
    assert!(s.load_bindings(now + 20).await.unwrap().is_empty());
}

async fn removing_a_user_removes_their_bindings(db: &TestDb) {
    let s = &db.store;
    s.add_user(&user("alice", None, "pw")).await.unwrap();
    s.add_user(&user("bob", None, "pw")).await.unwrap();
    s.save_binding(&binding("alice", "sip:a@1", i64::MAX))
        .await
        .unwrap();
    s.save_binding(&binding("bob", "sip:b@1", i64::MAX))
        .await
        .unwrap();
    s.remove_user("alice").await.unwrap();
    let left = s.load_bindings(0).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].aor, "bob");
}

async fn reopening_keeps_data(db: &TestDb) {
    db.store
        .add_user(&user("alice", Some("101"), "pw"))
        .await
        .unwrap();
    db.store
        .save_binding(&binding("alice", "sip:a@1", i64::MAX))
        .await
        .unwrap();
    // Opening again runs the migrations again: a no-op on an up-to-date database.
    let again = db.reopen().await;
    assert_eq!(again.list_users().await.unwrap().len(), 1);
    assert_eq!(again.load_bindings(0).await.unwrap().len(), 1);
    assert_eq!(again.users_revision().await.unwrap(), 1);
    again.close().await;
}

/// Both migration sets must give the same tables and columns.
async fn schema_has_the_expected_columns(db: &TestDb) {
    let mut columns: Vec<(String, String)> = if db.store.is_postgres() {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let rows = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        conn.close().await.ok();
        rows
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        let rows = sqlx::query_as(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name <> '_sqlx_migrations'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        conn.close().await.ok();
        rows
    };
    columns.sort();
    let expected: Vec<(String, String)> = [
        ("call_history", "at_ms"),
        ("call_history", "call_record"),
        ("call_history", "detail"),
        ("call_history", "kind"),
        ("call_history", "position"),
        ("call_legs", "call_record"),
        ("call_legs", "joined_at_ms"),
        ("call_legs", "left_at_ms"),
        ("call_legs", "name"),
        ("call_legs", "party"),
        ("call_legs", "position"),
        ("calls", "answered_at_ms"),
        ("calls", "callee"),
        ("calls", "caller"),
        ("calls", "direction"),
        ("calls", "duration_seconds"),
        ("calls", "ended_at_ms"),
        ("calls", "engine_call"),
        ("calls", "final_status"),
        ("calls", "id"),
        ("calls", "outcome"),
        ("calls", "recording_path"),
        ("calls", "sip_call_id"),
        ("calls", "started_at_ms"),
        ("meta", "key"),
        ("meta", "value"),
        ("recordings", "call_id"),
        ("recordings", "callee"),
        ("recordings", "caller"),
        ("recordings", "ended_at"),
        ("recordings", "id"),
        ("recordings", "path"),
        ("recordings", "seconds"),
        ("recordings", "started_at"),
        ("registrations", "aor"),
        ("registrations", "call_id"),
        ("registrations", "contact"),
        ("registrations", "cseq"),
        ("registrations", "expires_at"),
        ("registrations", "instance"),
        ("registrations", "path"),
        ("registrations", "received"),
        ("registrations", "user_agent"),
        ("users", "created_at"),
        ("users", "display_name"),
        ("users", "extension"),
        ("users", "ha1_md5"),
        ("users", "ha1_sha256"),
        ("users", "name"),
        ("users", "realm"),
        ("users", "updated_at"),
    ]
    .iter()
    .map(|(t, c)| (t.to_string(), c.to_string()))
    .collect();
    assert_eq!(columns, expected);
}

/// The CLI writes users while the server reads them and writes bindings, through two
/// independent handles (two processes' pools) on the same database.
async fn concurrent_writer_and_reader(db: &TestDb) {
    const USERS: i64 = 40;
    let cli = db.reopen().await;
    let server = db.store.clone();

    let writer = tokio::spawn(async move {
        for i in 0..USERS {
            cli.add_user(&user(
                &format!("user{i:03}"),
                Some(&format!("{}", 1000 + i)),
                "pw",
            ))
            .await
            .unwrap();
        }
        cli.close().await;
    });
    let reader = tokio::spawn(async move {
        let mut last = 0;
        loop {
            let revision = server.users_revision().await.unwrap();
            assert!(revision >= last, "revision went back: {last} -> {revision}");
            last = revision;
            let users = server.list_users().await.unwrap();
            // The revision is bumped in the insert's transaction: never ahead of the rows.
            assert!(
                users.len() as i64 >= revision,
                "{} users at revision {revision}",
                users.len()
            );
            server
                .save_binding(&binding("user000", &format!("sip:u@{revision}"), i64::MAX))
                .await
                .unwrap();
            if revision == USERS {
                break;
            }
            tokio::task::yield_now().await;
        }
    });
    writer.await.unwrap();
    reader.await.unwrap();
    assert_eq!(db.store.list_users().await.unwrap().len(), USERS as usize);
    assert_eq!(db.store.users_revision().await.unwrap(), USERS);
    assert!(!db.store.load_bindings(0).await.unwrap().is_empty());
}

#[test]
fn migration_sets_have_the_same_numbering() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let names = |set: &str| {
        let mut names: Vec<String> = std::fs::read_dir(root.join(set))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        names.sort();
        names
    };
    let sqlite = names("sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, names("postgres"));
}

#[tokio::test]
async fn url_forms_and_data_dir() {
    let dir = std::env::temp_dir().join(unique_name("datadir"));
    // The data directory does not exist yet: open creates it and the file.
    let url = Store::sqlite_url_for_data_dir(&dir.join("nested"));
    let store = Store::open(&url).await.unwrap();
    store.add_user(&user("alice", None, "pw")).await.unwrap();
    store.close().await;
    assert!(dir.join("nested/switchboard.db").exists());

    // The `sqlite:PATH?mode=rwc` form reaches the same file.
    let url = format!(
        "sqlite:{}?mode=rwc",
        dir.join("nested/switchboard.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.list_users().await.unwrap().len(), 1);
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();

    for bad in ["mysql://localhost/db", "", "switchboard.db"] {
        assert!(
            matches!(Store::open(bad).await, Err(StoreError::InvalidUrl(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn postgres_url_database_swap() {
    assert_eq!(
        with_database("postgres://u@127.0.0.1:5432/switchboard_test", "x"),
        "postgres://u@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
}

async fn recordings_are_stored_against_the_call(db: &TestDb) {
    let s = &db.store;
    let r = switchboard_store::Recording {
        id: "rec-1".into(),
        call_id: "abc@pbx".into(),
        caller: "alice".into(),
        callee: "bob".into(),
        path: "recordings/2026-11-22/rec-1.wav".into(),
        started_at: 1_800_000_000,
        ended_at: None,
        seconds: None,
    };
    s.add_recording(&r).await.unwrap();
    assert!(s.add_recording(&r).await.is_err(), "ids are unique");
    s.finish_recording("rec-1", 1_800_000_042, 42)
        .await
        .unwrap();
    assert!(matches!(
        s.finish_recording("nope", 1, 1).await,
        Err(switchboard_store::StoreError::NotFound(_))
    ));
    let found = s.recordings_of_call("abc@pbx").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, r.path);
    assert_eq!(
        (found[0].ended_at, found[0].seconds),
        (Some(1_800_000_042), Some(42))
    );
    assert!(s.recordings_of_call("other").await.unwrap().is_empty());
}

fn call_record(id: &str, caller: &str, callee: &str, started_at_ms: i64) -> CallRecord {
    CallRecord {
        id: id.into(),
        engine_call: 7,
        sip_call_id: format!("{id}@pbx"),
        direction: "internal".into(),
        caller: caller.into(),
        callee: callee.into(),
        started_at_ms,
        answered_at_ms: Some(started_at_ms + 2_000),
        ended_at_ms: started_at_ms + 62_500,
        outcome: "answered".into(),
        final_status: 200,
        duration_seconds: 60,
        recording_path: None,
        legs: vec![
            CallLegRecord {
                party: "caller".into(),
                name: caller.into(),
                joined_at_ms: started_at_ms,
                left_at_ms: Some(started_at_ms + 62_500),
            },
            CallLegRecord {
                party: "callee".into(),
                name: callee.into(),
                joined_at_ms: started_at_ms + 2_000,
                left_at_ms: Some(started_at_ms + 62_500),
            },
        ],
        history: vec![],
    }
}

async fn call_records_are_written_whole_and_queried_by_user_and_time(db: &TestDb) {
    let s = &db.store;
    let t0 = 1_800_000_000_000_i64;
    // alice -> bob, recorded; bob transfers alice to carol (a third leg), with history.
    let mut transferred = call_record("c1", "alice", "bob", t0);
    transferred.legs[1].left_at_ms = Some(t0 + 30_000);
    transferred.legs.push(CallLegRecord {
        party: "callee".into(),
        name: "carol".into(),
        joined_at_ms: t0 + 30_000,
        left_at_ms: Some(t0 + 62_500),
    });
    transferred.history = vec![
        CallHistoryRecord {
            at_ms: t0 + 10_000,
            kind: "held".into(),
            detail: r#"{"party":"caller"}"#.into(),
        },
        CallHistoryRecord {
            at_ms: t0 + 30_000,
            kind: "transferred".into(),
            detail: r#"{"kind":"blind","party":"callee","from":"bob","to":"carol"}"#.into(),
        },
    ];
    s.add_recording(&switchboard_store::Recording {
        id: "rec-c1".into(),
        call_id: "c1@pbx".into(),
        caller: "alice".into(),
        callee: "bob".into(),
        path: "recordings/c1.wav".into(),
        started_at: t0 / 1000,
        ended_at: None,
        seconds: None,
    })
    .await
    .unwrap();
    let stored = s.write_call_record(&transferred).await.unwrap();
    assert_eq!(
        stored.as_deref(),
        Some("recordings/c1.wav"),
        "the recording's path is copied from recordings by SIP Call-ID"
    );
    // Two unanswered calls later: bob -> dave busy, erin -> frank cancelled.
    let mut busy = call_record("c2", "bob", "dave", t0 + 100_000);
    busy.outcome = "busy".into();
    busy.final_status = 486;
    busy.answered_at_ms = None;
    busy.duration_seconds = 0;
    busy.legs.truncate(1);
    s.write_call_record(&busy).await.unwrap();
    let mut other = call_record("c3", "erin", "frank", t0 + 200_000);
    other.recording_path = Some("elsewhere.wav".into());
    s.write_call_record(&other).await.unwrap();

    let all = s
        .query_calls(&CallQuery {
            limit: 100,
            ..CallQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["c3", "c2", "c1"], "newest first");
    let mut expected = transferred.clone();
    expected.recording_path = Some("recordings/c1.wav".into());
    assert_eq!(all[2], expected, "legs and history come back in order");
    assert_eq!(all[1], busy);
    assert_eq!(all[0].recording_path.as_deref(), Some("elsewhere.wav"));

    let by = |user: &str| {
        let user = user.to_string();
        async move {
            s.query_calls(&CallQuery {
                user: Some(user),
                limit: 100,
                ..CallQuery::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(by("alice").await, ["c1"], "as caller");
    assert_eq!(by("bob").await, ["c2", "c1"], "as caller and callee");
    assert_eq!(by("carol").await, ["c1"], "on a leg a transfer added");
    assert!(by("nobody").await.is_empty());

    let range = |from_ms, to_ms, limit| async move {
        s.query_calls(&CallQuery {
            user: None,
            from_ms,
            to_ms,
            limit,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect::<Vec<_>>()
    };
    assert_eq!(range(Some(t0 + 100_000), None, 100).await, ["c3", "c2"]);
    assert_eq!(
        range(Some(t0), Some(t0 + 100_000), 100).await,
        ["c1"],
        "the end of the range is exclusive"
    );
    assert_eq!(range(None, None, 2).await, ["c3", "c2"], "limit");
    let q = CallQuery {
        user: Some("bob".into()),
        from_ms: Some(t0 + 1),
        to_ms: Some(t0 + 1_000_000),
        limit: 100,
    };
    let found: Vec<String> = s
        .query_calls(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(found, ["c2"], "user and range together");
}

async fn a_call_record_is_all_or_nothing(db: &TestDb) {
    let s = &db.store;
    let r = call_record("dup", "alice", "bob", 1_800_000_000_000);
    s.write_call_record(&r).await.unwrap();
    // The same id again: the call row conflicts, and none of the new legs may stay.
    let mut again = r.clone();
    again.legs[0].name = "mallory".into();
    assert!(matches!(
        s.write_call_record(&again).await,
        Err(StoreError::Conflict(_))
    ));
    let found = s
        .query_calls(&CallQuery {
            user: Some("mallory".into()),
            limit: 10,
            ..CallQuery::default()
        })
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    // A leg the table refuses fails after the call row went in: the row is rolled back.
    let mut broken = call_record("broken", "alice", "bob", 1_800_000_000_000);
    broken.history = vec![CallHistoryRecord {
        at_ms: 1,
        kind: "held".into(),
        detail: "{}".into(),
    }];
    broken.legs[1].party = "somebody".into();
    assert!(matches!(
        s.write_call_record(&broken).await,
        Err(StoreError::InvalidField { .. })
    ));
    let all = s
        .query_calls(&CallQuery {
            limit: 10,
            ..CallQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
}
