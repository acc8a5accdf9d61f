//! Prompts: the named clips IVR steps and features play to callers (`playback`, a menu's
//! prompt, the park announcement). The admin's recordings come from a prompts directory
//! (`--prompts-dir`), read once at start; names the admin did not record fall back to the
//! prompts shipped with Switchboard: speech generated from text by `prompts/generate.sh`
//! (espeak-ng), built into the binary so that a fresh install speaks without any file,
//! and a few tones. Looking a prompt up never touches the disk, so the engine task never
//! blocks on a file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use switchboard_media::player::Source;
use switchboard_media::tones::{Cadence, Level};
use switchboard_media::wav::Clip;

/// Embeds `prompts/NAME.wav` of the repository under its prompt name. The files live
/// outside this crate's directory, which is fine for a workspace built from its
/// repository (these crates are not published on their own).
macro_rules! shipped {
    ($($name:literal),* $(,)?) => {
        &[$((
            $name,
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../prompts/", $name, ".wav"))
                as &[u8],
        )),*]
    };
}

/// The speech prompts shipped with Switchboard (`prompts/*.wav`, made by
/// `prompts/generate.sh`; every file there is listed here, which a test checks): what the
/// default dialplan and its menu say, the park announcement, and the digits numbers are
/// read out with (Asterisk's `digits/` names). A WAV of the same name in the prompts
/// directory replaces each of them.
pub const SHIPPED_PROMPTS: &[(&str, &[u8])] = shipped![
    "this-call-is-recorded",
    "closed",
    "closed-holiday",
    "not-allowed",
    "ivr/main-menu",
    "ivr/invalid",
    "call-parked-at",
    "slot",
    "digits/0",
    "digits/1",
    "digits/2",
    "digits/3",
    "digits/4",
    "digits/5",
    "digits/6",
    "digits/7",
    "digits/8",
    "digits/9",
    "digits/star",
    "digits/pound",
];

/// Prompts that are tones, not words (Asterisk cadence syntax, every part played once).
/// A WAV of the same name in the prompts directory replaces each of them.
pub const TONE_PROMPTS: &[(&str, &str)] = &[("beep", "!1000/250")];

/// The shipped speech, decoded once per process (a few hundred kilobytes of PCM shared
/// by every call).
fn shipped_clips() -> &'static HashMap<&'static str, Arc<Clip>> {
    static CLIPS: OnceLock<HashMap<&'static str, Arc<Clip>>> = OnceLock::new();
    CLIPS.get_or_init(|| {
        SHIPPED_PROMPTS
            .iter()
            .filter_map(|(name, bytes)| match switchboard_media::wav::read_wav(bytes) {
                Ok(clip) if !clip.samples.is_empty() => Some((*name, Arc::new(clip))),
                // Cannot happen with the committed files (a test decodes each); a bad
                // regeneration must not take the server down, only that prompt.
                other => {
                    tracing::error!(prompt = name, result = ?other.map(|c| c.samples.len()), "shipped prompt unusable");
                    None
                }
            })
            .collect()
    })
}

/// Prompt clips by name (`closed`, `ivr/main-menu`: the path under the prompts directory
/// without `.wav`).
#[derive(Debug, Clone, Default)]
pub struct PromptLibrary {
    clips: HashMap<String, Arc<Clip>>,
}

/// Whether a prompt name may name a file: relative, `/`-separated, no `..`, no hidden or
/// empty parts. Names come from dialplans, so they are checked before they meet a path.
pub fn valid_prompt_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

impl PromptLibrary {
    /// Reads every `*.wav` under `dir` (subdirectories too: `ivr/main-menu.wav` is the
    /// prompt `ivr/main-menu`). A file that cannot be read is skipped with a warning, so
    /// one bad recording does not silence the rest; a missing directory is an error for
    /// the caller to report.
    pub fn load(dir: &Path) -> std::io::Result<PromptLibrary> {
        let mut clips = HashMap::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&d)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect();
            entries.sort();
            for path in entries {
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                if !path
                    .extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("wav"))
                {
                    continue;
                }
                let Some(name) = path
                    .strip_prefix(dir)
                    .ok()
                    .map(|rel| rel.with_extension(""))
                    .and_then(|rel| {
                        let parts: Option<Vec<&str>> =
                            rel.components().map(|c| c.as_os_str().to_str()).collect();
                        parts.map(|p| p.join("/"))
                    })
                    .filter(|n| valid_prompt_name(n))
                else {
                    tracing::warn!(file = %path.display(), "prompt file name not usable as a prompt name; skipped");
                    continue;
                };
                let read = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| switchboard_media::wav::read_wav(&b).map_err(|e| e.to_string()));
                match read {
                    Ok(clip) if !clip.samples.is_empty() => {
                        clips.insert(name, Arc::new(clip));
                    }
                    Ok(_) => tracing::warn!(file = %path.display(), "empty prompt file skipped"),
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "unreadable prompt file skipped")
                    }
                }
            }
        }
        tracing::info!(dir = %dir.display(), prompts = clips.len(), "prompts loaded");
        Ok(PromptLibrary { clips })
    }

    /// What plays for `name`: the admin's recording, else the shipped speech or tone,
    /// else `None` (the caller logs it and skips the prompt).
    pub fn source(&self, name: &str) -> Option<Source> {
        if let Some(clip) = self.clips.get(name) {
            return Some(Source::Clip(clip.clone()));
        }
        if let Some(clip) = shipped_clips().get(name) {
            return Some(Source::Clip(clip.clone()));
        }
        let (_, spec) = TONE_PROMPTS.iter().find(|(n, _)| *n == name)?;
        let cadence: Cadence = spec.parse().ok()?;
        Some(Source::Tone {
            cadence,
            level: Level::DEFAULT,
        })
    }

    /// The admin's recorded prompts (the shipped ones not counted).
    pub fn len(&self) -> usize {
        self.clips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::{valid_prompt_name, PromptLibrary, SHIPPED_PROMPTS, TONE_PROMPTS};
    use std::path::{Path, PathBuf};
    use switchboard_media::player::Source;
    use switchboard_media::tones::Cadence;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn tone_prompts_parse_and_play_once() {
        for (name, spec) in TONE_PROMPTS {
            let c: Cadence = spec.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            // A prompt must end by itself, or the route would never go on.
            assert_eq!(c.repeat_from(), None, "{name} loops");
            assert!(valid_prompt_name(name));
        }
        let lib = PromptLibrary::default();
        assert!(matches!(lib.source("beep"), Some(Source::Tone { .. })));
        assert!(lib.source("no-such-prompt").is_none());
    }

    #[test]
    fn shipped_prompts_are_short_audible_telephone_speech() {
        let lib = PromptLibrary::default();
        for (name, bytes) in SHIPPED_PROMPTS {
            assert!(valid_prompt_name(name), "{name}");
            let clip =
                switchboard_media::wav::read_wav(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(clip.rate, 8000, "{name}");
            let seconds = clip.samples.len() as f64 / 8000.0;
            assert!((0.2..15.0).contains(&seconds), "{name}: {seconds} s");
            let peak = clip
                .samples
                .iter()
                .map(|s| s.unsigned_abs())
                .max()
                .unwrap_or(0);
            // generate.sh normalises to -3 dBFS: speech, not silence, not clipped.
            assert!((16_000..32_000).contains(&peak), "{name}: peak {peak}");
            match lib.source(name) {
                Some(Source::Clip(c)) => assert_eq!(c.samples.len(), clip.samples.len()),
                other => panic!("{name} should play the shipped speech: {other:?}"),
            }
        }
    }

    #[test]
    fn every_wav_under_prompts_is_shipped_and_nothing_else() {
        let dir = repo().join("prompts");
        let mut found = Vec::new();
        let mut pending = vec![dir.clone()];
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|x| x == "wav") {
                    let rel = path.strip_prefix(&dir).unwrap().with_extension("");
                    found.push(rel.to_str().unwrap().replace('\\', "/"));
                }
            }
        }
        found.sort();
        let mut shipped: Vec<String> = SHIPPED_PROMPTS.iter().map(|(n, _)| n.to_string()).collect();
        shipped.sort();
        assert_eq!(
            found, shipped,
            "prompts/ and SHIPPED_PROMPTS must list the same files"
        );
    }

    #[test]
    fn every_prompt_the_default_dialplan_names_plays() {
        let plan = std::fs::read_to_string(repo().join("dialplans/default.toml")).unwrap();
        let lib = PromptLibrary::default();
        let mut names = Vec::new();
        for line in plan.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for key in ["playback = \"", "prompt = \""] {
                let mut rest = line;
                while let Some(i) = rest.find(key) {
                    rest = &rest[i + key.len()..];
                    let end = rest.find('"').unwrap();
                    names.push(rest[..end].to_string());
                    rest = &rest[end..];
                }
            }
        }
        assert!(names.len() >= 5, "{names:?}");
        for name in names {
            assert!(lib.source(&name).is_some(), "{name} has no shipped prompt");
        }
    }

    #[test]
    fn names_that_could_escape_the_directory_are_refused() {
        for bad in [
            "",
            "../etc/passwd",
            "/abs",
            "a//b",
            "ivr/.hidden",
            "a b",
            "x/..",
        ] {
            assert!(!valid_prompt_name(bad), "{bad:?}");
        }
        for good in ["closed", "ivr/main-menu", "en/v2/welcome_1"] {
            assert!(valid_prompt_name(good), "{good:?}");
        }
    }

    #[test]
    fn recordings_load_from_the_tree_and_replace_shipped_prompts() {
        let dir = std::env::temp_dir().join(format!("sb-prompts-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("ivr")).unwrap();
        let wav = switchboard_media::wav::write_wav(
            8000,
            switchboard_media::wav::Channels::Mono,
            &vec![1000i16; 800],
        );
        std::fs::write(dir.join("ivr").join("main-menu.wav"), &wav).unwrap();
        std::fs::write(dir.join("welcome.WAV"), &wav).unwrap();
        std::fs::write(dir.join("broken.wav"), b"RIFF nonsense").unwrap();
        std::fs::write(dir.join("notes.txt"), b"not audio").unwrap();
        let lib = PromptLibrary::load(&dir).unwrap();
        assert_eq!(lib.len(), 2);
        match lib.source("ivr/main-menu") {
            Some(Source::Clip(c)) => assert_eq!(c.samples.len(), 800),
            other => panic!("the recording should replace the shipped prompt: {other:?}"),
        }
        assert!(matches!(lib.source("welcome"), Some(Source::Clip(_))));
        assert!(lib.source("broken").is_none());
        // Names without a recording still play what is shipped.
        assert!(matches!(lib.source("closed"), Some(Source::Clip(_))));
        assert!(matches!(lib.source("beep"), Some(Source::Tone { .. })));
        assert!(PromptLibrary::load(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
