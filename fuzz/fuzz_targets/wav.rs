//! Fuzz target: the WAV reader (prompts and music on hold uploaded by admins) never panics
//! or over-allocates, and what it reads round-trips through the writer.
//! The body is shared with the stable mutation test (pbx/media/tests/wav_fuzz.rs).
#![no_main]

#[allow(dead_code)] // each target uses one of the bodies
#[path = "../../pbx/media/tests/common/fuzz_bodies.rs"]
mod fuzz_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_bodies::wav(data);
});
