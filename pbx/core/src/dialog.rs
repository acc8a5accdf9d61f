//! One side of a call as a SIP dialog (RFC 3261 §12): the identifiers, the remote target
//! and route set, and our local CSeq. The B2BUA keeps one per leg and builds every
//! in-dialog request (BYE, re-INVITE, ACK for 2xx) from it.

use switchboard_sip::header::NameAddr;
use switchboard_sip::transaction::Target;
use switchboard_sip::{HeaderName, Method, Request, Response, Uri, Via};

use crate::target::transport_token;

#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// Our side's From/To value without the tag.
    pub local_uri: NameAddr,
    /// The peer's From/To value without the tag.
    pub remote_uri: NameAddr,
    pub remote_target: Uri,
    /// Route set in the order requests carry it.
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    /// We sent the request that created the dialog, so the Call-ID is ours (RFC 3261
    /// §14.1 makes the glare back-off depend on it).
    pub we_chose_call_id: bool,
    /// Where the peer's requests came from (or where its binding registered from): the
    /// flow we send on, so phones behind NAT are reached without trusting Contact.
    pub target: Target,
}

/// Our own address as it appears in Via and Contact.
#[derive(Debug, Clone)]
pub struct LocalAddress {
    pub host: String,
    pub port: u16,
}

impl LocalAddress {
    pub fn via(&self, target: Target, branch: &str) -> String {
        let mut via = Via::new(
            transport_token(target.transport),
            &self.host,
            Some(self.port),
            branch,
        );
        // RFC 3581: ask the peer to answer where we sent from.
        via.set_param("rport", None);
        via.to_string()
    }

    pub fn contact(&self, target: Target) -> String {
        format!("<{}>", self.contact_uri("switchboard", target))
    }

    /// The Contact of a conference room's focus (RFC 4579 §4): the room number as the
    /// user part, so that phones can REFER other parties to it, and the `isfocus`
    /// feature parameter that tells them this dialog is with a conference.
    pub fn focus_contact(&self, room: &str, target: Target) -> String {
        format!("<{}>;isfocus", self.contact_uri(room, target))
    }

    fn contact_uri(&self, user: &str, target: Target) -> Uri {
        let mut uri = Uri::sip(Some(user), &self.host, Some(self.port));
        if target.transport == switchboard_sip::transaction::Transport::Tcp {
            uri.params
                .push(switchboard_sip::Param::new("transport", Some("tcp")));
        }
        uri
    }
}

impl Dialog {
    /// Builds a request inside this dialog with the next CSeq (ACK and CANCEL excluded:
    /// see [`Dialog::ack`]). §12.2.1.1.
    pub fn request(&mut self, method: Method, local: &LocalAddress, branch: &str) -> Request {
        self.local_cseq += 1;
        let cseq = self.local_cseq;
        self.build(method, cseq, local, branch)
    }

    /// The ACK for a 2xx to the INVITE sent with `invite_cseq` (§13.2.2.4): a new
    /// transaction-less request with the INVITE's CSeq number.
    pub fn ack(&self, invite_cseq: u32, local: &LocalAddress, branch: &str) -> Request {
        self.build(Method::Ack, invite_cseq, local, branch)
    }

    fn build(&self, method: Method, cseq: u32, local: &LocalAddress, branch: &str) -> Request {
        let mut req = Request::new(method.clone(), self.remote_target.clone());
        let h = &mut req.headers;
        h.push(HeaderName::Via, local.via(self.target, branch));
        h.push(HeaderName::MaxForwards, "70");
        for r in &self.route_set {
            h.push(HeaderName::Route, r.clone());
        }
        let mut from = self.local_uri.clone();
        from.set_param("tag", Some(&self.local_tag));
        h.push(HeaderName::From, from.to_string());
        let mut to = self.remote_uri.clone();
        if let Some(t) = &self.remote_tag {
            to.set_param("tag", Some(t));
        }
        h.push(HeaderName::To, to.to_string());
        h.push(HeaderName::CallId, self.call_id.clone());
        h.push(HeaderName::CSeq, format!("{cseq} {method}"));
        if matches!(method, Method::Invite | Method::Update) {
            h.push(HeaderName::Contact, local.contact(self.target));
        }
        req
    }

    /// Learns the peer's tag, target and route set from a 2xx or reliable 1xx to our
    /// INVITE (§12.1.2: the route set is the Record-Route reversed).
    pub fn confirm_from_response(&mut self, resp: &Response) {
        if let Ok(to) = resp.to() {
            if let Some(tag) = to.tag() {
                self.remote_tag = Some(tag.to_string());
            }
        }
        if let Some(c) = resp.headers.get(&HeaderName::Contact) {
            if let Ok(na) = NameAddr::parse(c) {
                self.remote_target = na.uri;
            }
        }
        let mut rr: Vec<String> = resp
            .headers
            .get_all(&HeaderName::RecordRoute)
            .map(str::to_string)
            .collect();
        rr.reverse();
        self.route_set = rr;
    }

    /// Updates the remote target from a target-refresh request or its 2xx (§12.2).
    pub fn refresh_target(&mut self, contact: Option<&str>) {
        if let Some(c) = contact {
            if let Ok(na) = NameAddr::parse(c) {
                self.remote_target = na.uri;
            }
        }
    }
}

/// Strips the tag from a From/To value so it can be stored as a dialog URI.
pub fn without_tag(mut na: NameAddr) -> NameAddr {
    na.params.retain(|p| !p.name.eq_ignore_ascii_case("tag"));
    na
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_sip::transaction::Transport;

    #[test]
    fn a_focus_contact_names_the_room_and_parses_back() {
        let local = LocalAddress {
            host: "192.0.2.10".into(),
            port: 5060,
        };
        let udp = Target {
            transport: Transport::Udp,
            addr: "192.0.2.20:5062".parse().unwrap(),
        };
        let text = local.focus_contact("800", udp);
        assert_eq!(text, "<sip:800@192.0.2.10:5060>;isfocus");
        let na = NameAddr::parse(&text).unwrap();
        assert_eq!(na.uri.user_unescaped().as_deref(), Some("800"));
        assert_eq!(na.param("isfocus"), Some(None));
        let tcp = Target {
            transport: Transport::Tcp,
            ..udp
        };
        assert_eq!(
            local.focus_contact("801", tcp),
            "<sip:801@192.0.2.10:5060;transport=tcp>;isfocus"
        );
        assert_eq!(local.contact(udp), "<sip:switchboard@192.0.2.10:5060>");
    }
}
