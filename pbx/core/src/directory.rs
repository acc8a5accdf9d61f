//! The user directory as the engine sees it: an in-memory snapshot of the users table,
//! replaced whole when the store's `users_revision` changes. Lookups are by SIP user name
//! or by extension, both exact (extensions are digits; names are case-sensitive like the
//! SIP user part, RFC 3261 §19.1.4).

use std::collections::HashMap;
use std::sync::Arc;

/// One user's authentication and addressing data. Never holds a password, only HA1s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub name: String,
    pub extension: Option<String>,
    pub display_name: Option<String>,
    /// The realm the HA1 values were computed for; a user whose realm differs from the
    /// server's domain cannot authenticate (their HA1 would never match).
    pub realm: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

#[derive(Debug, Clone, Default)]
pub struct Directory {
    by_name: HashMap<String, Arc<DirectoryUser>>,
    by_extension: HashMap<String, String>,
}

impl Directory {
    pub fn new(users: impl IntoIterator<Item = DirectoryUser>) -> Directory {
        let mut d = Directory::default();
        for u in users {
            if let Some(ext) = &u.extension {
                d.by_extension.insert(ext.clone(), u.name.clone());
            }
            d.by_name.insert(u.name.clone(), Arc::new(u));
        }
        d
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<DirectoryUser>> {
        self.by_name.get(name)
    }

    /// Resolves a dialled user part: a user name first, then an extension.
    pub fn resolve(&self, dialled: &str) -> Option<&Arc<DirectoryUser>> {
        self.by_name.get(dialled).or_else(|| {
            self.by_extension
                .get(dialled)
                .and_then(|n| self.by_name.get(n))
        })
    }
}
