//! Strings with variables: `${CALLER}`, `${EXTEN:1}`, `${1}`, `${CALLER.department}`,
//! `${HEADER.X-Account}`. Parsed once when the plan loads (so a typo is a load error with a
//! column), rendered for each call from a `Scope`. `$$` writes a literal `$`.

use std::fmt;

/// Variables every call has.
pub const BUILTIN_VARIABLES: &[&str] = &[
    "CALLER",
    "CALLER_NAME",
    "EXTEN",
    "CONTEXT",
    "ROUTE",
    "TRUNK",
    "DIGITS",
];

/// What a `${…}` names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variable {
    /// `${CALLER}`, `${EXTEN}`, … (see [`BUILTIN_VARIABLES`]), a plan variable, one set by a
    /// `set` action, or a named regex group.
    Named(String),
    /// `${0}` … `${9}`: a numbered regex group (0 is the whole number).
    Group(usize),
    /// `${CALLER.name}`: an attribute of the calling user, from the user directory.
    CallerAttribute(String),
    /// `${HEADER.Name}`: a SIP header of the incoming INVITE (case-insensitive name).
    Header(String),
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variable::Named(n) => f.write_str(n),
            Variable::Group(g) => write!(f, "{g}"),
            Variable::CallerAttribute(a) => write!(f, "CALLER.{a}"),
            Variable::Header(h) => write!(f, "HEADER.{h}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var {
        var: Variable,
        /// Byte offset of the `$` in the template text.
        at: usize,
        /// `${EXTEN:offset:length}`, Asterisk's substring syntax.
        offset: Option<i64>,
        length: Option<i64>,
    },
}

/// Why a template does not parse; `at` is the byte offset of the `$` that starts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    #[error("`${{` at offset {at} is never closed by `}}`")]
    Unclosed { at: usize },
    #[error("`{name}` at offset {at} is not a variable name (letters, digits and `_`; `CALLER.x` or `HEADER.x` for attributes and headers)")]
    BadName { at: usize, name: String },
    #[error("`{text}` at offset {at} is not a substring (`${{NAME:offset}}` or `${{NAME:offset:length}}`, whole numbers)")]
    BadSubstring { at: usize, text: String },
    #[error("a lone `$` at offset {at}: write `$$` for a dollar sign")]
    LoneDollar { at: usize },
}

impl TemplateError {
    /// Byte offset in the template text.
    pub fn offset(&self) -> usize {
        match self {
            TemplateError::Unclosed { at }
            | TemplateError::BadName { at, .. }
            | TemplateError::BadSubstring { at, .. }
            | TemplateError::LoneDollar { at } => *at,
        }
    }
}

/// A string with variables, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Where a rendering looks up variables. Unknown names render empty, as in Asterisk: the
/// checker has already rejected names that cannot exist, so only absent attributes and
/// headers (which depend on the call) get here.
pub trait Scope {
    fn get(&self, var: &Variable) -> Option<String>;
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parses a template.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut base = 0;
        while let Some(i) = rest.find('$') {
            literal.push_str(&rest[..i]);
            let at = base + i;
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                literal.push('$');
                base = at + 2;
                rest = tail;
                continue;
            }
            let Some(inner_start) = after.strip_prefix('{') else {
                return Err(TemplateError::LoneDollar { at });
            };
            let close = inner_start
                .find('}')
                .ok_or(TemplateError::Unclosed { at })?;
            let inner = &inner_start[..close];
            let (name, substring) = match inner.split_once(':') {
                Some((n, s)) => (n, Some(s)),
                None => (inner, None),
            };
            let var = if let Ok(g) = name.parse::<usize>() {
                Variable::Group(g)
            } else if let Some(attr) = name.strip_prefix("CALLER.") {
                if !is_name(attr) {
                    return Err(TemplateError::BadName {
                        at,
                        name: name.into(),
                    });
                }
                Variable::CallerAttribute(attr.to_string())
            } else if let Some(header) = name.strip_prefix("HEADER.") {
                let token = !header.is_empty()
                    && header
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.!%*+`'~".contains(c));
                if !token {
                    return Err(TemplateError::BadName {
                        at,
                        name: name.into(),
                    });
                }
                Variable::Header(header.to_string())
            } else if is_name(name) {
                Variable::Named(name.to_string())
            } else {
                return Err(TemplateError::BadName {
                    at,
                    name: name.into(),
                });
            };
            let (offset, length) = match substring {
                None => (None, None),
                Some(s) => {
                    let bad = || TemplateError::BadSubstring {
                        at,
                        text: s.to_string(),
                    };
                    let mut it = s.splitn(2, ':');
                    let offset = it
                        .next()
                        .and_then(|o| o.parse::<i64>().ok())
                        .ok_or_else(bad)?;
                    let length = match it.next() {
                        Some(l) => Some(l.parse::<i64>().map_err(|_| bad())?),
                        None => None,
                    };
                    (Some(offset), length)
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var {
                var,
                at,
                offset,
                length,
            });
            let consumed = i + 2 + close + 1;
            base += consumed;
            rest = &rest[consumed..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template {
            source: text.to_string(),
            parts,
        })
    }

    /// A template without variables (text used as is).
    pub fn literal(text: &str) -> Template {
        Template {
            source: text.replace('$', "$$"),
            parts: if text.is_empty() {
                Vec::new()
            } else {
                vec![Part::Text(text.to_string())]
            },
        }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the template has no variables (its value is known when the plan loads).
    pub fn constant(&self) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var { .. } => return None,
            }
        }
        Some(out)
    }

    /// The variables used, each with the byte offset of its `$`.
    pub fn variables(&self) -> impl Iterator<Item = (&Variable, usize)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var { var, at, .. } => Some((var, *at)),
            Part::Text(_) => None,
        })
    }

    /// The value for one call.
    pub fn render(&self, scope: &dyn Scope) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var {
                    var,
                    offset,
                    length,
                    ..
                } => {
                    let value = scope.get(var).unwrap_or_default();
                    out.push_str(&substring(&value, *offset, *length));
                }
            }
        }
        out
    }
}

/// Asterisk's `${VAR:offset:length}`: a negative offset counts from the end, a negative
/// length leaves that many characters off the end. Counts characters, not bytes.
fn substring(value: &str, offset: Option<i64>, length: Option<i64>) -> String {
    let Some(offset) = offset else {
        return value.to_string();
    };
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len() as i64;
    let start = if offset < 0 {
        (n + offset).max(0)
    } else {
        offset.min(n)
    };
    let end = match length {
        None => n,
        Some(l) if l < 0 => (n + l).max(start),
        Some(l) => (start + l).min(n),
    };
    chars[start as usize..end as usize].iter().collect()
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vars;
    impl Scope for Vars {
        fn get(&self, var: &Variable) -> Option<String> {
            match var {
                Variable::Named(n) if n == "EXTEN" => Some("0039055123456".into()),
                Variable::Named(n) if n == "CALLER" => Some("101".into()),
                Variable::Group(1) => Some("39".into()),
                Variable::CallerAttribute(a) if a == "department" => Some("sales".into()),
                Variable::Header(h) if h == "X-Account" => Some("gold".into()),
                _ => None,
            }
        }
    }

    fn render(s: &str) -> String {
        Template::parse(s).unwrap().render(&Vars)
    }

    #[test]
    fn renders_variables_and_text() {
        assert_eq!(render("+${1}-${CALLER}"), "+39-101");
        assert_eq!(
            render("${CALLER.department}/${HEADER.X-Account}"),
            "sales/gold"
        );
        assert_eq!(render("costs $$5"), "costs $5");
        assert_eq!(render("${MISSING}x"), "x");
        assert_eq!(render("plain"), "plain");
    }

    #[test]
    fn substrings_follow_asterisk() {
        assert_eq!(render("${EXTEN:2}"), "39055123456");
        assert_eq!(render("${EXTEN:2:2}"), "39");
        assert_eq!(render("${EXTEN:-6}"), "123456");
        assert_eq!(render("${EXTEN:0:-6}"), "0039055");
        assert_eq!(render("${EXTEN:40}"), "");
        assert_eq!(render("${CALLER:-9}"), "101");
    }

    #[test]
    fn errors_carry_the_offset() {
        assert_eq!(
            Template::parse("ab${EXTEN"),
            Err(TemplateError::Unclosed { at: 2 })
        );
        assert_eq!(
            Template::parse("x${1A}"),
            Err(TemplateError::BadName {
                at: 1,
                name: "1A".into()
            })
        );
        assert_eq!(
            Template::parse("${EXTEN:a}"),
            Err(TemplateError::BadSubstring {
                at: 0,
                text: "a".into()
            })
        );
        assert_eq!(
            Template::parse("5$"),
            Err(TemplateError::LoneDollar { at: 1 })
        );
    }

    #[test]
    fn lists_variables_with_offsets() {
        let t = Template::parse("a${CALLER}b${2}").unwrap();
        let vars: Vec<_> = t.variables().collect();
        assert_eq!(
            vars,
            vec![
                (&Variable::Named("CALLER".into()), 1),
                (&Variable::Group(2), 11)
            ]
        );
        assert_eq!(t.constant(), None);
        assert_eq!(
            Template::parse("a$$b").unwrap().constant(),
            Some("a$b".into())
        );
    }
}
