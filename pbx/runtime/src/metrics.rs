//! Counters and gauges the HTTP side renders on /metrics. Written by the engine task after
//! each batch of work and by the connection tasks; read lock-free.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use switchboard_core::Stats;

#[derive(Debug, Default)]
pub struct Metrics {
    ready: AtomicBool,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub parse_errors: AtomicU64,
    pub auth_failures: AtomicU64,
    pub calls_total: AtomicU64,
    pub calls_answered: AtomicU64,
    pub registrations: AtomicU64,
    pub active_calls: AtomicU64,
    pub transactions: AtomicU64,
    pub users: AtomicU64,
    pub tcp_connections: AtomicU64,
    pub oversize_messages: AtomicU64,
    pub stalled_connections: AtomicU64,
    pub refused_connections: AtomicU64,
    pub dropped_sends: AtomicU64,
    pub store_errors: AtomicU64,
    pub media_sessions: AtomicU64,
    pub media_sessions_total: AtomicU64,
    pub media_send_errors: AtomicU64,
    pub rtp_packets_in: AtomicU64,
    pub rtp_packets_out: AtomicU64,
    pub rtp_unexpected_source: AtomicU64,
    pub rtp_malformed: AtomicU64,
    pub dtmf_digits: AtomicU64,
    pub trunks_registered: AtomicU64,
    pub dialplan_reloads: AtomicU64,
    pub dialplan_reload_failures: AtomicU64,
    pub dialplan_loaded_at: AtomicU64,
    pub rtp_muted_dropped: AtomicU64,
    pub rtp_transcoded_frames: AtomicU64,
    pub rtp_concealed_frames: AtomicU64,
    pub call_records_written: AtomicU64,
    pub call_record_errors: AtomicU64,
    pub call_records_dropped: AtomicU64,
    pub conference_rooms: AtomicU64,
    pub conference_participants: AtomicU64,
    pub conference_ticks: AtomicU64,
    pub conference_deadline_misses: AtomicU64,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    pub(crate) fn update(&self, s: &Stats) {
        self.messages_in.store(s.messages_in, Relaxed);
        self.messages_out.store(s.messages_out, Relaxed);
        self.parse_errors.store(s.parse_errors, Relaxed);
        self.auth_failures.store(s.auth_failures, Relaxed);
        self.calls_total.store(s.calls_total, Relaxed);
        self.calls_answered.store(s.calls_answered, Relaxed);
        self.registrations.store(s.registrations as u64, Relaxed);
        self.active_calls.store(s.active_calls as u64, Relaxed);
        self.transactions.store(s.transactions as u64, Relaxed);
        self.users.store(s.users as u64, Relaxed);
    }

    pub(crate) fn set_tcp_connections(&self, n: usize) {
        self.tcp_connections.store(n as u64, Relaxed);
    }
    pub(crate) fn count_oversize(&self) {
        self.oversize_messages.fetch_add(1, Relaxed);
    }
    pub(crate) fn count_stalled(&self) {
        self.stalled_connections.fetch_add(1, Relaxed);
    }
    pub(crate) fn count_refused_connection(&self) {
        self.refused_connections.fetch_add(1, Relaxed);
    }
    pub(crate) fn count_dropped_send(&self) {
        self.dropped_sends.fetch_add(1, Relaxed);
    }
    pub(crate) fn count_store_error(&self) {
        self.store_errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn count_dtmf(&self) {
        self.dtmf_digits.fetch_add(1, Relaxed);
    }
    pub fn dialplan_reloaded(&self, ok: bool) {
        self.dialplan_reloads.fetch_add(1, Relaxed);
        if ok {
            self.dialplan_loaded_at.store(crate::unix_now(), Relaxed);
        } else {
            self.dialplan_reload_failures.fetch_add(1, Relaxed);
        }
    }
    pub(crate) fn set_trunks_registered(&self, n: usize) {
        self.trunks_registered.store(n as u64, Relaxed);
    }
    pub(crate) fn set_media_sessions(&self, n: usize) {
        self.media_sessions.store(n as u64, Relaxed);
    }
    pub(crate) fn media_sessions_started(&self) {
        self.media_sessions_total.fetch_add(1, Relaxed);
    }
    pub(crate) fn count_media_send_error(&self) {
        self.media_send_errors.fetch_add(1, Relaxed);
    }
    /// Adds a finished session's packet counters.
    pub(crate) fn media_sessions_ended(&self, s: switchboard_media::relay::SessionStats) {
        self.rtp_packets_in
            .fetch_add(s.packets_in.iter().sum(), Relaxed);
        self.rtp_packets_out
            .fetch_add(s.packets_out.iter().sum(), Relaxed);
        self.rtp_unexpected_source
            .fetch_add(s.unexpected_source, Relaxed);
        self.rtp_malformed.fetch_add(s.malformed, Relaxed);
        self.rtp_muted_dropped.fetch_add(s.muted_dropped, Relaxed);
        self.rtp_transcoded_frames
            .fetch_add(s.transcoded_frames, Relaxed);
        self.rtp_concealed_frames
            .fetch_add(s.concealed_frames, Relaxed);
    }
    pub(crate) fn count_call_record_written(&self) {
        self.call_records_written.fetch_add(1, Relaxed);
    }
    pub(crate) fn count_call_record_error(&self) {
        self.call_record_errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn count_call_record_dropped(&self) {
        self.call_records_dropped.fetch_add(1, Relaxed);
    }

    /// Every value with its Prometheus name, type and help text.
    pub fn samples(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Relaxed);
        vec![
            (
                "switchboard_dialplan_reloads_total",
                "counter",
                "Dialplan reloads tried (SIGHUP, file change, API).",
                g(&self.dialplan_reloads),
            ),
            (
                "switchboard_dialplan_reload_failures_total",
                "counter",
                "Dialplan reloads refused (the running plan stayed).",
                g(&self.dialplan_reload_failures),
            ),
            (
                "switchboard_dialplan_loaded_timestamp_seconds",
                "gauge",
                "When the running dialplan was loaded (unix seconds; 0: none).",
                g(&self.dialplan_loaded_at),
            ),
            (
                "switchboard_trunks_registered",
                "gauge",
                "Trunks currently registered with their provider.",
                g(&self.trunks_registered),
            ),
            (
                "switchboard_registrations",
                "gauge",
                "Registered contacts.",
                g(&self.registrations),
            ),
            (
                "switchboard_users",
                "gauge",
                "Users in the directory.",
                g(&self.users),
            ),
            (
                "switchboard_active_calls",
                "gauge",
                "Calls in progress.",
                g(&self.active_calls),
            ),
            (
                "switchboard_sip_transactions",
                "gauge",
                "Live SIP transactions.",
                g(&self.transactions),
            ),
            (
                "switchboard_tcp_connections",
                "gauge",
                "Open SIP TCP connections.",
                g(&self.tcp_connections),
            ),
            (
                "switchboard_sip_messages_received_total",
                "counter",
                "SIP messages received and parsed.",
                g(&self.messages_in),
            ),
            (
                "switchboard_sip_messages_sent_total",
                "counter",
                "SIP messages sent.",
                g(&self.messages_out),
            ),
            (
                "switchboard_sip_parse_errors_total",
                "counter",
                "SIP messages that could not be parsed or used.",
                g(&self.parse_errors),
            ),
            (
                "switchboard_sip_oversize_total",
                "counter",
                "SIP messages refused for their size.",
                g(&self.oversize_messages),
            ),
            (
                "switchboard_auth_failures_total",
                "counter",
                "Digest authentications that failed.",
                g(&self.auth_failures),
            ),
            (
                "switchboard_calls_total",
                "counter",
                "Calls started.",
                g(&self.calls_total),
            ),
            (
                "switchboard_calls_answered_total",
                "counter",
                "Calls answered.",
                g(&self.calls_answered),
            ),
            (
                "switchboard_tcp_stalled_total",
                "counter",
                "TCP peers disconnected for stalling mid-message.",
                g(&self.stalled_connections),
            ),
            (
                "switchboard_tcp_refused_total",
                "counter",
                "TCP connections refused at the limit.",
                g(&self.refused_connections),
            ),
            (
                "switchboard_sends_dropped_total",
                "counter",
                "Messages dropped because a peer's queue was full.",
                g(&self.dropped_sends),
            ),
            (
                "switchboard_store_errors_total",
                "counter",
                "Failed registration writes.",
                g(&self.store_errors),
            ),
            (
                "switchboard_media_sessions",
                "gauge",
                "Calls with media anchored here.",
                g(&self.media_sessions),
            ),
            (
                "switchboard_media_sessions_total",
                "counter",
                "Media sessions started.",
                g(&self.media_sessions_total),
            ),
            (
                "switchboard_media_send_errors_total",
                "counter",
                "RTP/RTCP packets the OS refused to send.",
                g(&self.media_send_errors),
            ),
            (
                "switchboard_rtp_packets_received_total",
                "counter",
                "RTP packets received (finished sessions).",
                g(&self.rtp_packets_in),
            ),
            (
                "switchboard_rtp_packets_sent_total",
                "counter",
                "RTP packets sent (finished sessions).",
                g(&self.rtp_packets_out),
            ),
            (
                "switchboard_rtp_unexpected_source_total",
                "counter",
                "RTP dropped: not from the latched source.",
                g(&self.rtp_unexpected_source),
            ),
            (
                "switchboard_rtp_malformed_total",
                "counter",
                "RTP/RTCP dropped as malformed.",
                g(&self.rtp_malformed),
            ),
            (
                "switchboard_dtmf_digits_total",
                "counter",
                "Key presses detected in calls.",
                g(&self.dtmf_digits),
            ),
            (
                "switchboard_rtp_muted_dropped_total",
                "counter",
                "RTP not relayed because its sender was muted (finished sessions).",
                g(&self.rtp_muted_dropped),
            ),
            (
                "switchboard_rtp_transcoded_frames_total",
                "counter",
                "Frames the server encoded: audio transcoded between the legs' codecs, and prompts or music it played (finished sessions).",
                g(&self.rtp_transcoded_frames),
            ),
            (
                "switchboard_rtp_concealed_frames_total",
                "counter",
                "Frames a transcoding leg concealed: packets lost, too late, or after its stream stopped, up to the jitter buffer's 200 ms (finished sessions).",
                g(&self.rtp_concealed_frames),
            ),
            (
                "switchboard_call_records_written_total",
                "counter",
                "Calls written to the call log.",
                g(&self.call_records_written),
            ),
            (
                "switchboard_call_record_errors_total",
                "counter",
                "Failed call log writes (each retry counts).",
                g(&self.call_record_errors),
            ),
            (
                "switchboard_call_records_dropped_total",
                "counter",
                "Call records lost: queue full or every retry failed.",
                g(&self.call_records_dropped),
            ),
            (
                "switchboard_conference_rooms",
                "gauge",
                "Conference rooms with a running mixer.",
                g(&self.conference_rooms),
            ),
            (
                "switchboard_conference_participants",
                "gauge",
                "Participants being mixed in conference rooms.",
                g(&self.conference_participants),
            ),
            (
                "switchboard_conference_ticks_total",
                "counter",
                "20 ms mixing steps done, all rooms together.",
                g(&self.conference_ticks),
            ),
            (
                "switchboard_conference_deadline_misses_total",
                "counter",
                "Mixing steps that ended after the next was due, or were skipped.",
                g(&self.conference_deadline_misses),
            ),
        ]
    }
}
