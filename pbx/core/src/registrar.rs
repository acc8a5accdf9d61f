//! The registrar and location service (RFC 3261 §10.3): bindings of an address-of-record
//! (a user name) to the contacts its devices registered, each kept with the transport
//! source the REGISTER came from so that calls reach phones behind NAT (the flow, not the
//! private address written in Contact). Pure state; times are unix seconds passed in.

use std::collections::{BTreeSet, HashMap};

use switchboard_sip::header::NameAddr;
use switchboard_sip::transaction::Target;
use switchboard_sip::{HeaderName, Request, Response};

use crate::target::format_target;

/// Registrar limits; the defaults follow common practice (Kamailio's registrar module).
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
}

impl Default for RegistrarConfig {
    fn default() -> RegistrarConfig {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
        }
    }
}

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub aor: String,
    /// The Contact URI as registered (compared as text, RFC 3261 §10.3 step 6 leaves
    /// URI comparison to §19.1.4; phones re-register byte-identical contacts).
    pub contact: String,
    /// `+sip.instance` (RFC 5626) when the device sent one.
    pub instance: Option<String>,
    pub call_id: String,
    pub cseq: u32,
    pub expires_at: u64,
    /// Where the REGISTER came from: requests to this contact are sent there.
    pub source: Target,
    /// Path header values (RFC 3327), to be used as a Route set toward the contact.
    pub path: Vec<String>,
    pub user_agent: Option<String>,
}

/// A change the driver persists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingChange {
    Upserted(Binding),
    Removed { aor: String, contact: String },
}

#[derive(Debug, Default)]
pub struct Registrar {
    config: RegistrarConfig,
    bindings: HashMap<String, Vec<Binding>>,
    /// (expires_at, aor, contact): the sweep visits only what is due.
    expiry: BTreeSet<(u64, String, String)>,
}

impl Registrar {
    pub fn new(config: RegistrarConfig) -> Registrar {
        Registrar {
            config,
            bindings: HashMap::new(),
            expiry: BTreeSet::new(),
        }
    }

    /// Total live bindings.
    pub fn len(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Restores bindings loaded from storage at start-up.
    pub fn restore(&mut self, bindings: impl IntoIterator<Item = Binding>) {
        for b in bindings {
            self.insert(b);
        }
    }

    fn insert(&mut self, b: Binding) {
        self.expiry
            .insert((b.expires_at, b.aor.clone(), b.contact.clone()));
        let list = self.bindings.entry(b.aor.clone()).or_default();
        match list.iter_mut().find(|x| x.contact == b.contact) {
            Some(x) => {
                self.expiry
                    .remove(&(x.expires_at, x.aor.clone(), x.contact.clone()));
                *x = b;
            }
            None => list.push(b),
        }
    }

    fn remove(&mut self, aor: &str, contact: &str) -> Option<Binding> {
        let list = self.bindings.get_mut(aor)?;
        let pos = list.iter().position(|b| b.contact == contact)?;
        let b = list.remove(pos);
        if list.is_empty() {
            self.bindings.remove(aor);
        }
        self.expiry
            .remove(&(b.expires_at, b.aor.clone(), b.contact.clone()));
        Some(b)
    }

    /// The live contacts of `aor`, most recently registered last.
    pub fn lookup(&self, aor: &str, now_unix: u64) -> Vec<Binding> {
        self.bindings
            .get(aor)
            .map(|l| {
                l.iter()
                    .filter(|b| b.expires_at > now_unix)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The earliest expiry, for the engine's timer.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiry.iter().next().map(|(t, _, _)| *t)
    }

    /// Removes every binding that has expired by `now_unix`.
    pub fn expire(&mut self, now_unix: u64) -> Vec<BindingChange> {
        let mut changes = Vec::new();
        while let Some((t, aor, contact)) = self.expiry.iter().next().cloned() {
            if t > now_unix {
                break;
            }
            self.remove(&aor, &contact);
            changes.push(BindingChange::Removed { aor, contact });
        }
        changes
    }

    /// Handles a REGISTER already authenticated as `user` (whose name is the AOR).
    /// `to_tag` is the tag the response gets. Follows RFC 3261 §10.3 steps 5–8.
    pub fn handle_register(
        &mut self,
        req: &Request,
        aor: &str,
        source: Target,
        now_unix: u64,
        to_tag: &str,
    ) -> (Response, Vec<BindingChange>) {
        let reply =
            |status: u16, reason: &str| Response::for_request(req, status, reason, Some(to_tag));
        let call_id = match req.call_id() {
            Ok(c) => c.to_string(),
            Err(_) => return (reply(400, "Missing Call-ID"), Vec::new()),
        };
        let cseq = match req.cseq() {
            Ok(c) => c.seq,
            Err(_) => return (reply(400, "Bad CSeq"), Vec::new()),
        };
        let header_expires = match req.headers.get(&HeaderName::Expires) {
            None => None,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(e) => Some(e),
                Err(_) => return (reply(400, "Bad Expires"), Vec::new()),
            },
        };
        let contacts: Vec<&str> = req.headers.get_all(&HeaderName::Contact).collect();
        let path: Vec<String> = req
            .headers
            .get_all(&HeaderName::Path)
            .map(str::to_string)
            .collect();
        let user_agent = req.headers.get(&HeaderName::UserAgent).map(str::to_string);

        let mut changes = Vec::new();
        if contacts.iter().any(|c| c.trim() == "*") {
            // Step 6: "*" is only valid alone and with Expires: 0.
            if contacts.len() != 1 || header_expires != Some(0) {
                return (reply(400, "Invalid Wildcard Contact"), Vec::new());
            }
            let existing: Vec<Binding> = self.lookup(aor, u64::MIN);
            for b in existing {
                // Step 6: a binding from the same Call-ID with a CSeq not lower than the
                // request's survives (the request is out of order).
                if b.call_id == call_id && b.cseq >= cseq {
                    continue;
                }
                self.remove(aor, &b.contact);
                changes.push(BindingChange::Removed {
                    aor: aor.to_string(),
                    contact: b.contact,
                });
            }
            return (self.ok(req, aor, now_unix, to_tag), changes);
        }

        let mut parsed = Vec::with_capacity(contacts.len());
        for c in &contacts {
            match NameAddr::parse(c) {
                Ok(na) => parsed.push(na),
                Err(_) => return (reply(400, "Bad Contact"), Vec::new()),
            }
        }
        // Validate every contact before changing anything: a REGISTER is all or nothing.
        let mut plan = Vec::with_capacity(parsed.len());
        for na in &parsed {
            let expires = na
                .expires()
                .or(header_expires)
                .unwrap_or(self.config.default_expires);
            if expires != 0 && expires < self.config.min_expires {
                let mut r = reply(423, "Interval Too Brief");
                r.headers
                    .push(HeaderName::MinExpires, self.config.min_expires.to_string());
                return (r, Vec::new());
            }
            let expires = expires.min(self.config.max_expires);
            let contact = na.uri.to_string();
            if let Some(existing) = self
                .bindings
                .get(aor)
                .and_then(|l| l.iter().find(|b| b.contact == contact))
            {
                if existing.call_id == call_id && existing.cseq >= cseq {
                    return (reply(500, "Out Of Order CSeq"), Vec::new());
                }
            }
            let instance = na
                .param("+sip.instance")
                .flatten()
                .map(|s| s.trim_matches('"').to_string());
            plan.push((contact, expires, instance));
        }
        let live_after = {
            let current: Vec<String> = self
                .lookup(aor, now_unix)
                .into_iter()
                .map(|b| b.contact)
                .collect();
            let mut n = current.len();
            for (contact, expires, _) in &plan {
                let present = current.contains(contact);
                if *expires == 0 && present {
                    n -= 1;
                } else if *expires != 0 && !present {
                    n += 1;
                }
            }
            n
        };
        if live_after > self.config.max_contacts {
            return (reply(403, "Too Many Contacts"), Vec::new());
        }
        for (contact, expires, instance) in plan {
            if expires == 0 {
                if self.remove(aor, &contact).is_some() {
                    changes.push(BindingChange::Removed {
                        aor: aor.to_string(),
                        contact,
                    });
                }
                continue;
            }
            // RFC 5626 §6: a new registration from the same instance replaces the old one.
            if let Some(inst) = &instance {
                let stale: Vec<String> = self
                    .bindings
                    .get(aor)
                    .map(|l| {
                        l.iter()
                            .filter(|b| b.instance.as_ref() == Some(inst) && b.contact != contact)
                            .map(|b| b.contact.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for c in stale {
                    self.remove(aor, &c);
                    changes.push(BindingChange::Removed {
                        aor: aor.to_string(),
                        contact: c,
                    });
                }
            }
            let b = Binding {
                aor: aor.to_string(),
                contact,
                instance,
                call_id: call_id.clone(),
                cseq,
                expires_at: now_unix + u64::from(expires),
                source,
                path: path.clone(),
                user_agent: user_agent.clone(),
            };
            self.insert(b.clone());
            changes.push(BindingChange::Upserted(b));
        }
        (self.ok(req, aor, now_unix, to_tag), changes)
    }

    /// 200 OK listing every live contact with its remaining time (step 8).
    fn ok(&self, req: &Request, aor: &str, now_unix: u64, to_tag: &str) -> Response {
        let mut resp = Response::for_request(req, 200, "OK", Some(to_tag));
        for b in self.lookup(aor, now_unix) {
            resp.headers.push(
                HeaderName::Contact,
                format!(
                    "<{}>;expires={}",
                    b.contact,
                    b.expires_at.saturating_sub(now_unix)
                ),
            );
        }
        resp
    }
}

/// A short description of a binding's flow for logs and storage.
pub fn describe_source(b: &Binding) -> String {
    format_target(b.source)
}
