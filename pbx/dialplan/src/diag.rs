//! Diagnostics: every problem the loader and the checker find, each with the file, line,
//! column and dotted field path of what is wrong, printed like a compiler's
//! (`dialplans/default.toml:42:11: error: unknown action "dail" (did you mean "dial"?)`).

use std::fmt;

use crate::pattern::PatternError;
use crate::template::TemplateError;
use crate::time::TimeError;

/// 1-based line and column (columns count characters, as editors do).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// What kind of thing a dial or room action names, for "does it exist" warnings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TargetKind {
    User,
    Trunk,
    ConferenceRoom,
    ParkSlot,
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetKind::User => "user",
            TargetKind::Trunk => "trunk",
            TargetKind::ConferenceRoom => "conference room",
            TargetKind::ParkSlot => "park slot",
        })
    }
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean \"{s}\"?)"),
        None => String::new(),
    }
}

/// Everything that can be wrong with a plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    #[error("cannot read the file: {reason}")]
    Unreadable { reason: String },
    #[error("TOML syntax: {message}")]
    Syntax { message: String },
    #[error("unknown key \"{key}\" in {place}{}", did_you_mean(suggestion))]
    UnknownKey {
        key: String,
        place: &'static str,
        suggestion: Option<String>,
    },
    #[error("missing key \"{key}\" in {place}")]
    MissingKey {
        key: &'static str,
        place: &'static str,
    },
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("\"{value}\" is not {expected}")]
    InvalidValue { value: String, expected: String },
    #[error("\"{a}\" and \"{b}\" cannot both be given")]
    Conflicting { a: &'static str, b: &'static str },
    #[error("unknown action \"{name}\"{}", did_you_mean(suggestion))]
    UnknownAction {
        name: String,
        suggestion: Option<String>,
    },
    #[error("action \"{action}\" needs a value: write {{ {action} = … }}")]
    NeedsValue { action: String },
    #[error("action \"{action}\" takes no value: write it as the string \"{action}\"")]
    TakesNoValue { action: String },
    #[error("action \"{action}\" needs the option \"{option}\"")]
    MissingOption { action: String, option: String },
    #[error("the route has no actions")]
    NoActions,
    #[error(
        "unknown option \"{option}\" for action \"{action}\"{}",
        did_you_mean(suggestion)
    )]
    UnknownOption {
        action: String,
        option: String,
        suggestion: Option<String>,
    },
    #[error("bad pattern \"{pattern}\": {error}")]
    BadPattern {
        pattern: String,
        error: PatternError,
    },
    #[error("bad regex \"{regex}\": {message}")]
    BadRegex { regex: String, message: String },
    #[error("bad variable reference: {error}")]
    BadTemplate { error: TemplateError },
    #[error("unknown variable \"${{{name}}}\"{}{}", did_you_mean(suggestion), hint.as_deref().map(|h| format!(": {h}")).unwrap_or_default())]
    UnknownVariable {
        name: String,
        suggestion: Option<String>,
        hint: Option<&'static str>,
    },
    #[error("{error}")]
    BadTime { error: TimeError },
    #[error("unknown time zone \"{name}\"{}; time zones are IANA names such as \"Europe/Rome\" or \"UTC\"", did_you_mean(suggestion))]
    UnknownTimeZone {
        name: String,
        suggestion: Option<String>,
    },
    #[error("{what} \"{name}\" is defined twice (first at line {})", first.line)]
    Duplicate {
        what: &'static str,
        name: String,
        first: Location,
    },
    #[error("\"{name}\" is not a valid {what} name (letters, digits, `-` and `_`)")]
    InvalidName { what: &'static str, name: String },
    #[error("unknown context \"{name}\"{}", did_you_mean(suggestion))]
    UnknownContext {
        name: String,
        suggestion: Option<String>,
    },
    #[error(
        "unknown route \"{route}\" in context \"{context}\"{}",
        did_you_mean(suggestion)
    )]
    UnknownRoute {
        context: String,
        route: String,
        suggestion: Option<String>,
    },
    #[error("unknown menu \"{name}\"{}", did_you_mean(suggestion))]
    UnknownMenu {
        name: String,
        suggestion: Option<String>,
    },
    #[error("route \"{route}\" is shadowed by route \"{by}\" (line {}){}: {}",
        by_location.line,
        via.as_deref().map(|v| format!(" when context \"{v}\" includes it")).unwrap_or_default(),
        if *reachable_by_name { "its match is never used, the route is reached only by goto/call/menu" } else { "every call it matches goes to the earlier route, so it is unreachable" })]
    Shadowed {
        route: String,
        by: String,
        by_location: Location,
        via: Option<String>,
        reachable_by_name: bool,
    },
    #[error(
        "route \"{route}\" is unreachable: it has no match and no goto, call or menu leads to it"
    )]
    UnreachableRoute { route: String },
    #[error("context \"{context}\" is never used: no trunk, group, include, goto or default_context names it")]
    UnusedContext { context: String },
    #[error("menu \"{menu}\" is never used: no route has {{ menu = \"{menu}\" }}")]
    UnusedMenu { menu: String },
    #[error("unreachable action: it follows a \"{after}\", which never returns")]
    UnreachableAction { after: &'static str },
    #[error("goto/call loop: {}", cycle.join(" -> "))]
    Loop { cycle: Vec<String> },
    #[error("{kind} \"{name}\" does not exist{}", if *uses > 1 { format!(" (named {uses} times, first here)") } else { String::new() })]
    UnknownTarget {
        kind: TargetKind,
        name: String,
        uses: usize,
    },
    #[error("{count} {kind} name(s) could not be checked: no {kind} list is available")]
    TargetsNotChecked { kind: TargetKind, count: usize },
    #[error("user \"{user}\" is already in group \"{first_group}\": a user's calls start in one context")]
    UserInTwoGroups { user: String, first_group: String },
    #[error("${{{index}}} does not exist: the route's regex has {groups} group(s)")]
    NoSuchGroup { index: usize, groups: usize },
    #[error("regex group \"{name}\" has the name of a built-in or plan variable")]
    GroupNameTaken { name: String },
}

/// One problem at one place.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `None` only for problems about the whole file (it cannot be read).
    pub location: Option<Location>,
    /// Dotted path of the offending field, e.g. `contexts.internal.routes[2].actions[0]`.
    pub field: String,
    pub problem: Problem,
}

/// All the problems of one plan, with the text needed to print them.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    pub source_name: String,
    source_text: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub(crate) fn new(source_name: &str, source_text: &str) -> Diagnostics {
        Diagnostics {
            source_name: source_name.to_string(),
            source_text: source_text.to_string(),
            items: Vec::new(),
        }
    }

    pub(crate) fn push(
        &mut self,
        severity: Severity,
        location: Option<Location>,
        field: impl Into<String>,
        problem: Problem,
    ) {
        self.items.push(Diagnostic {
            severity,
            location,
            field: field.into(),
            problem,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    /// Orders by position (problems without one first), errors before warnings at a place.
    pub(crate) fn sort(&mut self) {
        self.items.sort_by_key(|d| (d.location, d.severity));
    }

    /// `N errors, M warnings`.
    pub fn summary(&self) -> String {
        let (e, w) = (self.errors().count(), self.warnings().count());
        format!(
            "{e} error{}, {w} warning{}",
            if e == 1 { "" } else { "s" },
            if w == 1 { "" } else { "s" }
        )
    }
}

/// Each diagnostic as `file:line:column: severity: message`, then the field path and the
/// source line with a caret under the column.
impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            match d.location {
                Some(loc) => writeln!(
                    f,
                    "{}:{}:{}: {}: {}",
                    self.source_name, loc.line, loc.column, d.severity, d.problem
                )?,
                None => writeln!(f, "{}: {}: {}", self.source_name, d.severity, d.problem)?,
            }
            if !d.field.is_empty() {
                writeln!(f, "    in {}", d.field)?;
            }
            if let Some(loc) = d.location {
                if let Some(line) = self.source_text.lines().nth(loc.line as usize - 1) {
                    let number = loc.line.to_string();
                    writeln!(f, "{number:>5} | {line}")?;
                    let pad: String = line
                        .chars()
                        .take(loc.column as usize - 1)
                        .map(|c| if c == '\t' { '\t' } else { ' ' })
                        .collect();
                    writeln!(f, "{:>5} | {pad}^", "")?;
                }
            }
        }
        Ok(())
    }
}

/// Byte offsets to line and column.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> LineIndex<'a> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    pub(crate) fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        Location {
            line: line as u32 + 1,
            column: column as u32 + 1,
        }
    }
}

/// The closest candidate within a small edit distance, for "did you mean".
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions, the most
/// common typo ("dail" for "dial" is one edit, not two).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_characters() {
        let idx = LineIndex::new("ab\nçd = 1\n");
        assert_eq!(idx.location(0), Location { line: 1, column: 1 });
        assert_eq!(idx.location(3), Location { line: 2, column: 1 });
        // `d` follows a two-byte character: byte 5, column 2.
        assert_eq!(idx.location(5), Location { line: 2, column: 2 });
    }

    #[test]
    fn suggestions_are_close_words_only() {
        assert_eq!(suggest("dail", ["dial", "answer"]), Some("dial".into()));
        assert_eq!(
            suggest("timout", ["timeout", "strategy"]),
            Some("timeout".into())
        );
        assert_eq!(suggest("xyz", ["dial", "answer"]), None);
    }
}
