//! Persistent state of a Switchboard node: users (SIP accounts with HA1 values, never
//! passwords) and registrations (bindings), on SQLite (the embedded default) or PostgreSQL
//! (several nodes sharing one database).
//!
//! The schema lives in `migrations/{sqlite,postgres}/` at the workspace top (see the README
//! there for why two sets), is embedded at build time and applied by [`Store::open`].
//! Every query here is written once, in SQL both databases accept (`$N` placeholders,
//! `INSERT ... ON CONFLICT`), and run on whichever pool the URL chose.
//!
//! This crate owns no protocol logic: it stores what the registrar and the CLI hand it.
#![forbid(unsafe_code)]

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use switchboard_sip::digest::{self, Algorithm};

pub use call_log::{CallHistoryRecord, CallLegRecord, CallQuery, CallRecord, MAX_CALL_QUERY_LIMIT};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");

/// How long an SQLite writer waits for another one (the CLI while the server writes, or
/// the reverse) before giving up with "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The file name of the embedded database inside the data directory.
pub const SQLITE_FILE_NAME: &str = "switchboard.db";

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A unique value is taken; the message names which (user name or extension).
    #[error("{0}")]
    Conflict(String),
    /// No such user; the message names it.
    #[error("{0}")]
    NotFound(String),
    #[error("invalid database URL {0:?}: expected sqlite:PATH, sqlite:///PATH or postgres://...")]
    InvalidUrl(String),
    #[error("invalid user name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid extension {extension:?}: {reason}")]
    InvalidExtension {
        extension: String,
        reason: &'static str,
    },
    #[error("invalid {field}: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A user to create. The password is only used to compute the HA1 values.
#[derive(Clone)]
pub struct NewUser {
    pub name: String,
    pub password: String,
    pub extension: Option<String>,
    pub display_name: Option<String>,
    pub realm: String,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("extension", &self.extension)
            .field("display_name", &self.display_name)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// A stored user: what digest authentication needs, and nothing it must not know.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub name: String,
    pub extension: Option<String>,
    pub display_name: Option<String>,
    pub realm: String,
    /// HA1 = MD5(name:realm:password), lowercase hex.
    pub ha1_md5: String,
    /// HA1 = SHA-256(name:realm:password), lowercase hex.
    pub ha1_sha256: String,
}

impl User {
    /// The stored HA1 for `alg` (its base hash for `-sess` variants).
    pub fn ha1(&self, alg: Algorithm) -> &str {
        match alg.base() {
            Algorithm::Md5 => &self.ha1_md5,
            _ => &self.ha1_sha256,
        }
    }
}

/// One call recording (a stereo WAV: caller left, callee right).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Recording {
    pub id: String,
    pub call_id: String,
    pub caller: String,
    pub callee: String,
    pub path: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub seconds: Option<i64>,
}

/// One registration binding: an address of record (the user name) reachable at a Contact.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Binding {
    pub aor: String,
    pub contact: String,
    /// The `+sip.instance` Contact parameter (RFC 5626), if any.
    pub instance: Option<String>,
    pub call_id: String,
    pub cseq: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Where the REGISTER came from: `"transport:ip:port"`.
    pub received: String,
    /// The Path header value (RFC 3327), if any.
    pub path: Option<String>,
    pub user_agent: Option<String>,
}

/// Both pools have the same API, so each query is written once and run by [`on_pool!`].
/// Two concrete pools rather than `AnyPool`: no runtime driver registry, native types,
/// and the right migrator for each.
#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool, whichever it is.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

// After `on_pool!`: a macro is visible only to modules declared below it.
mod call_log;

/// A handle on the database; cheap to clone (it is a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Characters RFC 3261 §25.1 allows in a `user` part without escaping
/// (unreserved / user-unreserved). `%` escapes are refused: a name is typed by people and
/// compared byte for byte with the digest username.
fn is_user_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c)
}

/// Checks a SIP user name: the user part of `sip:NAME@host` and the digest username.
pub fn validate_user_name(name: &str) -> Result<(), StoreError> {
    let invalid = |reason| {
        Err(StoreError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > 64 {
        return invalid("it is longer than 64 characters");
    }
    if name.chars().any(char::is_whitespace) {
        return invalid("it contains whitespace");
    }
    if name.contains('@') {
        return invalid("it contains '@' (give the user part only, without the domain)");
    }
    if name.contains(':') {
        return invalid("it contains ':'");
    }
    if !name.chars().all(is_user_char) {
        return invalid(
            "it may only contain letters, digits and - _ . ! ~ * ' ( ) & = + $ , ; ? /",
        );
    }
    Ok(())
}

/// Checks an extension: what a phone dials (digits, `*`, `#`, `+`).
pub fn validate_extension(extension: &str) -> Result<(), StoreError> {
    let invalid = |reason| {
        Err(StoreError::InvalidExtension {
            extension: extension.to_string(),
            reason,
        })
    };
    if extension.is_empty() {
        return invalid("it is empty");
    }
    if extension.len() > 32 {
        return invalid("it is longer than 32 characters");
    }
    if !extension
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | '+'))
    {
        return invalid("it may only contain digits, '*', '#' and '+'");
    }
    Ok(())
}

fn validate_realm(realm: &str) -> Result<(), StoreError> {
    if realm.is_empty() || realm.chars().any(|c| c.is_control()) {
        return Err(StoreError::InvalidField {
            field: "realm",
            reason: "it must be non-empty text without control characters",
        });
    }
    Ok(())
}

fn validate_password(password: &str) -> Result<(), StoreError> {
    if password.is_empty() {
        return Err(StoreError::InvalidField {
            field: "password",
            reason: "it is empty",
        });
    }
    Ok(())
}

/// Turns a unique violation on `users` into a [`StoreError::Conflict`] naming the column.
/// Both databases name the column or its constraint in the error: SQLite says
/// "UNIQUE constraint failed: users.extension", PostgreSQL "users_extension_key".
fn map_user_conflict(err: sqlx::Error, u: &NewUser) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() {
            let about_extension = db.constraint().unwrap_or("").contains("extension")
                || db.message().contains("extension");
            return if about_extension {
                StoreError::Conflict(format!(
                    "extension {:?} is already taken",
                    u.extension.as_deref().unwrap_or("")
                ))
            } else {
                StoreError::Conflict(format!("user {:?} already exists", u.name))
            };
        }
    }
    StoreError::Database(err)
}

fn percent_encode_path(path: &str) -> String {
    // sqlx percent-decodes the file name and cuts it at '?'.
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            _ => out.push(c),
        }
    }
    out
}

const USER_COLUMNS: &str = "name, extension, display_name, realm, ha1_md5, ha1_sha256";
const BINDING_COLUMNS: &str =
    "aor, contact, instance, call_id, cseq, expires_at, received, path, user_agent";
const BUMP_USERS_REVISION: &str = "UPDATE meta SET value = value + 1 WHERE key = 'users_revision'";

impl Store {
    /// Opens (creating an SQLite file if needed) and migrates the database at `url`:
    /// `sqlite:PATH`, `sqlite://PATH`, `sqlite:///ABSOLUTE/PATH` (a `?mode=` parameter is
    /// honoured; without one the file and its directory are created when missing), or
    /// `postgres://...` / `postgresql://...`.
    ///
    /// SQLite runs in WAL mode with a busy timeout, so the CLI can write while a server
    /// reads and writes the same file.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let pool = if url.starts_with("sqlite:") {
            let mut options = SqliteConnectOptions::from_str(url)
                .map_err(|_| StoreError::InvalidUrl(url.to_string()))?;
            if !url.contains("mode=") && !url.contains(":memory:") {
                options = options.create_if_missing(true);
                if let Some(dir) = options.get_filename().parent() {
                    if !dir.as_os_str().is_empty() {
                        tokio::fs::create_dir_all(dir)
                            .await
                            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
                    }
                }
            }
            let options = options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await?;
            SQLITE_MIGRATIONS.run(&pool).await?;
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|_| StoreError::InvalidUrl(url.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await?;
            // The Postgres migrator takes an advisory lock: nodes starting together are safe.
            POSTGRES_MIGRATIONS.run(&pool).await?;
            Pool::Postgres(pool)
        } else {
            return Err(StoreError::InvalidUrl(url.to_string()));
        };
        let backend = match pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        };
        tracing::debug!(backend, "store opened");
        Ok(Store { pool })
    }

    /// The URL of the embedded default database: `DIR/switchboard.db`, created if missing.
    pub fn sqlite_url_for_data_dir(dir: &Path) -> String {
        let path = dir.join(SQLITE_FILE_NAME);
        format!("sqlite://{}", percent_encode_path(&path.to_string_lossy()))
    }

    /// True when this store is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Waits for the pool's connections to close.
    pub async fn close(self) {
        on_pool!(self, pool => pool.close().await)
    }

    /// Creates a user, storing the MD5 and SHA-256 HA1 values for `u.realm`.
    pub async fn add_user(&self, u: &NewUser) -> Result<(), StoreError> {
        validate_user_name(&u.name)?;
        if let Some(ext) = &u.extension {
            validate_extension(ext)?;
        }
        validate_realm(&u.realm)?;
        validate_password(&u.password)?;
        let md5 = digest::ha1(Algorithm::Md5, &u.name, &u.realm, &u.password);
        let sha256 = digest::ha1(Algorithm::Sha256, &u.name, &u.realm, &u.password);
        let now = now_unix();
        let sql = "INSERT INTO users \
                   (name, extension, display_name, realm, ha1_md5, ha1_sha256, created_at, updated_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $7)";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(sql)
                .bind(&u.name)
                .bind(&u.extension)
                .bind(&u.display_name)
                .bind(&u.realm)
                .bind(&md5)
                .bind(&sha256)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| map_user_conflict(e, u))?;
            sqlx::query(BUMP_USERS_REVISION).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        tracing::info!(user = %u.name, "user added");
        Ok(())
    }

    /// Replaces a user's HA1 values (and realm).
    pub async fn set_password(
        &self,
        name: &str,
        password: &str,
        realm: &str,
    ) -> Result<(), StoreError> {
        validate_realm(realm)?;
        validate_password(password)?;
        let md5 = digest::ha1(Algorithm::Md5, name, realm, password);
        let sha256 = digest::ha1(Algorithm::Sha256, name, realm, password);
        let sql = "UPDATE users SET realm = $2, ha1_md5 = $3, ha1_sha256 = $4, updated_at = $5 \
                   WHERE name = $1";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(sql)
                .bind(name)
                .bind(realm)
                .bind(&md5)
                .bind(&sha256)
                .bind(now_unix())
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("no user {name:?}")));
            }
            sqlx::query(BUMP_USERS_REVISION).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        tracing::info!(user = %name, "password changed");
        Ok(())
    }

    /// Deletes a user and their registrations.
    pub async fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("DELETE FROM users WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("no user {name:?}")));
            }
            sqlx::query("DELETE FROM registrations WHERE aor = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query(BUMP_USERS_REVISION).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        tracing::info!(user = %name, "user removed");
        Ok(())
    }

    /// All users, ordered by name (byte order, the same on both databases).
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users");
        let mut users: Vec<User> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        // Sorted here, not by ORDER BY: PostgreSQL would sort by the database's locale.
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    /// One user by name, if it exists.
    pub async fn get_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1");
        let user = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(name).fetch_optional(pool).await?
        });
        Ok(user)
    }

    /// A counter bumped by every change to users: poll it to know when to reload them.
    pub async fn users_revision(&self) -> Result<i64, StoreError> {
        let sql = "SELECT value FROM meta WHERE key = 'users_revision'";
        let revision: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(sql).fetch_one(pool).await?
        });
        Ok(revision)
    }

    /// Records that a call's recording started (see `migrations/*/0002_recordings.sql`).
    pub async fn add_recording(&self, r: &Recording) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO recordings (id, call_id, caller, callee, path, started_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&r.id)
            .bind(&r.call_id)
            .bind(&r.caller)
            .bind(&r.callee)
            .bind(&r.path)
            .bind(r.started_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Completes a recording's row when its file is closed.
    pub async fn finish_recording(
        &self,
        id: &str,
        ended_at: i64,
        seconds: i64,
    ) -> Result<(), StoreError> {
        let done = on_pool!(self, pool => {
            sqlx::query("UPDATE recordings SET ended_at = $1, seconds = $2 WHERE id = $3")
                .bind(ended_at)
                .bind(seconds)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if done == 0 {
            return Err(StoreError::NotFound(format!("recording {id}")));
        }
        Ok(())
    }

    /// Recordings of a call (by the caller leg's Call-ID), oldest first.
    pub async fn recordings_of_call(&self, call_id: &str) -> Result<Vec<Recording>, StoreError> {
        let rows: Vec<Recording> = on_pool!(self, pool => {
            sqlx::query_as::<_, Recording>(
                "SELECT id, call_id, caller, callee, path, started_at, ended_at, seconds \
                 FROM recordings WHERE call_id = $1 ORDER BY started_at, id",
            )
            .bind(call_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Inserts or replaces the binding of `(b.aor, b.contact)`.
    pub async fn save_binding(&self, b: &Binding) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO registrations ({BINDING_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (aor, contact) DO UPDATE SET \
             instance = excluded.instance, call_id = excluded.call_id, cseq = excluded.cseq, \
             expires_at = excluded.expires_at, received = excluded.received, \
             path = excluded.path, user_agent = excluded.user_agent"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(&b.aor)
                .bind(&b.contact)
                .bind(&b.instance)
                .bind(&b.call_id)
                .bind(b.cseq)
                .bind(b.expires_at)
                .bind(&b.received)
                .bind(&b.path)
                .bind(&b.user_agent)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Deletes one binding (nothing happens when there is none).
    pub async fn delete_binding(&self, aor: &str, contact: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM registrations WHERE aor = $1 AND contact = $2")
                .bind(aor)
                .bind(contact)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Deletes every binding of an address of record (`Contact: *`).
    pub async fn delete_bindings_of(&self, aor: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM registrations WHERE aor = $1")
                .bind(aor)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Deletes bindings expired at `now_unix` and returns the others, ordered by
    /// (aor, contact) in byte order.
    pub async fn load_bindings(&self, now_unix: i64) -> Result<Vec<Binding>, StoreError> {
        let select = format!("SELECT {BINDING_COLUMNS} FROM registrations WHERE expires_at > $1");
        let mut bindings: Vec<Binding> = on_pool!(self, pool => {
            let purged = sqlx::query("DELETE FROM registrations WHERE expires_at <= $1")
                .bind(now_unix)
                .execute(pool)
                .await?;
            if purged.rows_affected() > 0 {
                tracing::debug!(count = purged.rows_affected(), "expired bindings purged");
            }
            sqlx::query_as(&select).bind(now_unix).fetch_all(pool).await?
        });
        bindings.sort_by(|a, b| (&a.aor, &a.contact).cmp(&(&b.aor, &b.contact)));
        Ok(bindings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for ok in ["alice", "101", "a.b-c_d", "x+y", "O'Neil"] {
            assert!(validate_user_name(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("al ice", "whitespace"),
            ("alice\t", "whitespace"),
            ("alice@example.com", "'@'"),
            ("sip:alice", "':'"),
            ("al\"ice", "may only"),
            ("al<ice>", "may only"),
            ("alïce", "may only"),
        ] {
            let err = validate_user_name(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(validate_user_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn extensions() {
        for ok in ["101", "*97", "#1", "+4930123"] {
            assert!(validate_extension(ok).is_ok(), "{ok}");
        }
        for bad in ["", "10a", "1 01", "1-1"] {
            assert!(matches!(
                validate_extension(bad),
                Err(StoreError::InvalidExtension { .. })
            ));
        }
    }

    #[test]
    fn data_dir_url() {
        assert_eq!(
            Store::sqlite_url_for_data_dir(Path::new("/var/lib/switchboard")),
            "sqlite:///var/lib/switchboard/switchboard.db"
        );
        let url = Store::sqlite_url_for_data_dir(Path::new("/tmp/a?b#c%d"));
        let options = SqliteConnectOptions::from_str(&url).unwrap();
        assert_eq!(
            options.get_filename(),
            Path::new("/tmp/a?b#c%d/switchboard.db")
        );
    }
}
