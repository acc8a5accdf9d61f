//! Fuzz target: digest `Credentials::parse` (Authorization / Proxy-Authorization values)
//! and the verification path. The body is shared with the stable mutation test
//! (pbx/sip/tests/fuzz_corpus.rs).
#![no_main]

#[allow(dead_code)] // each target uses one of the bodies
#[path = "../../pbx/sip/tests/common/fuzz_bodies.rs"]
mod fuzz_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_bodies::digest_credentials(data);
});
