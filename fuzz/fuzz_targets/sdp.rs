//! Fuzz target: SessionDescription::parse, print/re-parse equality, helpers, answer() and
//! build_offer() on whatever parses. The body is shared with the stable mutation test
//! (pbx/media/tests/sdp_fuzz_corpus.rs).
#![no_main]

#[allow(dead_code)] // each target uses one of the bodies
#[path = "../../pbx/media/tests/common/fuzz_bodies.rs"]
mod fuzz_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_bodies::sdp(data);
});
