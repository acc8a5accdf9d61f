//! Fuzz target: `switchboard_dialplan::Dialplan::parse` on arbitrary text (with and
//! without a directory to check against), then routing a few calls through whatever
//! loads. The body is shared with the stable mutation test
//! (pbx/dialplan/tests/dialplan_fuzz.rs).
#![no_main]

#[allow(dead_code)]
#[path = "../../pbx/dialplan/tests/common/fuzz_bodies.rs"]
mod fuzz_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fuzz_bodies::dialplan(data);
});
