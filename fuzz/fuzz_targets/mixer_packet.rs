//! Fuzz target: a conference mixer room with a PCMU, a PCMA and an Opus participant fed
//! arbitrary bytes as their RTP, interleaved with ticks, mutes, leaves and rejoins. The
//! body (and the input layout) is shared with the stable mutation test
//! (pbx/media/tests/mixer_fuzz.rs).
#![no_main]

#[allow(dead_code)] // each target uses one of the bodies
#[path = "../../pbx/media/tests/common/fuzz_bodies.rs"]
mod fuzz_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_bodies::mixer_packet(data);
});
