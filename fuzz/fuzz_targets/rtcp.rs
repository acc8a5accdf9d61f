//! Fuzz target: RtcpPacket::parse_compound and print/re-parse stability. The body is shared with the stable mutation test
//! (pbx/media/tests/rtp_fuzz.rs).
#![no_main]

#[allow(dead_code)] // each target uses one of the bodies
#[path = "../../pbx/media/tests/common/fuzz_bodies.rs"]
mod fuzz_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_bodies::rtcp(data);
});
