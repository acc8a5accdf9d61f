//! Prompts: the named clips IVR steps play to callers (`playback`, a menu's prompt). The
//! admin's recordings come from a prompts directory (`--prompts-dir`), read once at start;
//! names the project's own plans use and the admin did not record are placeholder tone
//! patterns generated here (they are beeps, not speech). Looking a prompt up never touches
//! the disk, so the engine task never blocks on a file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use switchboard_media::player::Source;
use switchboard_media::tones::{Cadence, Level};
use switchboard_media::wav::Clip;

/// The prompts shipped with Switchboard: tone patterns (Asterisk cadence syntax, every part
/// played once) standing in for the recordings the default dialplan names, so that it
/// works, and is audibly different prompt by prompt, before anyone records a word. A WAV
/// of the same name in the prompts directory replaces each of them.
pub const PLACEHOLDER_PROMPTS: &[(&str, &str)] = &[
    // Two short high beeps, as recording warnings usually are.
    ("this-call-is-recorded", "!1400/200,!0/150,!1400/200"),
    // Falling pair: the office is closed.
    ("closed", "!660/300,!0/100,!440/600"),
    // Falling triple: closed for a holiday.
    ("closed-holiday", "!660/300,!0/100,!550/300,!0/100,!440/600"),
    // The ITU-T E.180 special information tone (rising 950/1400/1800 Hz): refused.
    ("not-allowed", "!950/330,!1400/330,!1800/330"),
    // Rising triad: "choose now".
    ("ivr/main-menu", "!440/250,!0/100,!554/250,!0/100,!659/400"),
    // Two low buzzes: not a valid choice.
    ("ivr/invalid", "!400/200,!0/100,!400/200"),
    ("beep", "!1000/250"),
];

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

    /// What plays for `name`: the admin's recording, else the shipped placeholder tone,
    /// else `None` (the caller logs it and skips the prompt).
    pub fn source(&self, name: &str) -> Option<Source> {
        if let Some(clip) = self.clips.get(name) {
            return Some(Source::Clip(clip.clone()));
        }
        let (_, spec) = PLACEHOLDER_PROMPTS.iter().find(|(n, _)| *n == name)?;
        let cadence: Cadence = spec.parse().ok()?;
        Some(Source::Tone {
            cadence,
            level: Level::DEFAULT,
        })
    }

    /// Recorded prompts (placeholders not counted).
    pub fn len(&self) -> usize {
        self.clips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::{valid_prompt_name, PromptLibrary, PLACEHOLDER_PROMPTS};
    use switchboard_media::player::Source;
    use switchboard_media::tones::Cadence;

    #[test]
    fn placeholders_parse_and_play_once() {
        for (name, spec) in PLACEHOLDER_PROMPTS {
            let c: Cadence = spec.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            // A prompt must end by itself, or the route would never go on.
            assert_eq!(c.repeat_from(), None, "{name} loops");
            assert!(valid_prompt_name(name));
        }
        let lib = PromptLibrary::default();
        assert!(matches!(lib.source("closed"), Some(Source::Tone { .. })));
        assert!(lib.source("no-such-prompt").is_none());
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
    fn recordings_load_from_the_tree_and_replace_placeholders() {
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
            other => panic!("the recording should replace the placeholder: {other:?}"),
        }
        assert!(matches!(lib.source("welcome"), Some(Source::Clip(_))));
        assert!(lib.source("broken").is_none());
        assert!(matches!(lib.source("closed"), Some(Source::Tone { .. })));
        assert!(PromptLibrary::load(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
