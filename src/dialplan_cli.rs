//! `switchboard dialplan check|trace|test`: the admin's tools for dialplan files, dry (no
//! call is placed, no server needs to run). The plan logic is in `switchboard-dialplan`;
//! this module only reads files, the user directory and the clock, and prints.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use switchboard_dialplan::{
    jiff, route_with_digits, Dialplan, Known, RouteRequest, Suite, DEFAULT_PLAN_PATH,
};
use switchboard_store::Store;

use crate::config::Config;

#[derive(Subcommand)]
pub enum DialplanCommand {
    /// Check a plan: every error and warning with file:line:column (exit 1 on errors).
    Check {
        /// The plan (default dialplans/default.toml).
        file: Option<PathBuf>,
    },
    /// Route a call without placing it: the context, the route and every action.
    Trace(TraceArgs),
    /// Run a table of expected routings (FILE.tests.toml tests FILE.toml).
    Test {
        /// The test file, e.g. dialplans/default.tests.toml.
        file: PathBuf,
        /// The plan to test (default: the test file's name without `.tests`).
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct TraceArgs {
    /// The plan (default dialplans/default.toml).
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    /// The caller: a user name, or the calling number of an inbound call.
    #[arg(long)]
    from: String,
    /// The called number.
    #[arg(long)]
    to: String,
    /// When the call happens: 2026-11-23T09:00 (plan time zone), or with an offset or Z.
    /// Default: now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// A SIP header of the INVITE, as Name:Value (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// The call comes in on this trunk (its context is used).
    #[arg(long)]
    trunk: Option<String>,
    /// Start in this context instead.
    #[arg(long)]
    context: Option<String>,
    /// The caller's display name.
    #[arg(long)]
    caller_name: Option<String>,
    /// A caller attribute as key=value (repeatable); the directory's are used otherwise.
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    attrs: Vec<String>,
    /// Digits pressed at the menu the routing ends with: the trace follows them.
    #[arg(long)]
    digits: Option<String>,
}

/// The user directory when a database is configured or exists in the data directory;
/// `dialplan check` must not create one.
async fn open_existing_store(cfg: &Config) -> anyhow::Result<Option<Store>> {
    let exists = cfg.database_url.is_some()
        || cfg
            .data_dir
            .join(switchboard_store::SQLITE_FILE_NAME)
            .exists();
    if !exists {
        return Ok(None);
    }
    let url = cfg.database_url();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("cannot open the database {}", crate::redact(&url)))?;
    Ok(Some(store))
}

struct Directory {
    known: Known,
    /// Attributes per user name, for `${CALLER.x}` in traces.
    attrs: Vec<(String, Vec<(String, String)>)>,
}

async fn directory(cfg: &Config) -> anyhow::Result<Directory> {
    let mut known = Known {
        // The host's zoneinfo (jiff falls back to its bundled copy without one).
        time_zones: jiff::tz::db().clone(),
        ..Known::default()
    };
    let mut attrs = Vec::new();
    if let Some(store) = open_existing_store(cfg).await? {
        let users = store.list_users().await;
        store.close().await;
        let users = users?;
        let mut names = BTreeSet::new();
        for u in users {
            names.insert(u.name.clone());
            let mut a = vec![("name".to_string(), u.name.clone())];
            if let Some(e) = u.extension {
                names.insert(e.clone());
                a.push(("extension".into(), e));
            }
            if let Some(d) = u.display_name {
                a.push(("display_name".into(), d));
            }
            attrs.push((u.name, a));
        }
        known.users = Some(names);
    }
    // Trunks and park slots come from the configuration; conference rooms have no directory
    // yet, so room names are reported as not checked.
    known.trunks = Some(cfg.trunks.iter().map(|t| t.name.clone()).collect());
    let (first, last) = cfg.features.park_slots;
    known.park_slots = Some((first..=last).map(|s| s.to_string()).collect());
    Ok(Directory { known, attrs })
}

fn load(path: &Path, known: &Known) -> anyhow::Result<Dialplan> {
    match Dialplan::load(path, known) {
        Ok(plan) => Ok(plan),
        Err(diags) => {
            print!("{diags}");
            bail!("{}: {}", path.display(), diags.summary())
        }
    }
}

pub async fn run(cfg: &Config, cmd: DialplanCommand) -> anyhow::Result<()> {
    let dir = directory(cfg).await?;
    match cmd {
        DialplanCommand::Check { file } => {
            let path = file.unwrap_or_else(|| PathBuf::from(DEFAULT_PLAN_PATH));
            let plan = load(&path, &dir.known)?;
            print!("{}", plan.warnings());
            if dir.known.users.is_none() {
                println!(
                    "note: no user database found ({}); pass --data-dir or --database-url to check user names",
                    cfg.data_dir.display()
                );
            }
            println!("{}: {}", path.display(), plan.warnings().summary());
            Ok(())
        }
        DialplanCommand::Trace(args) => trace(&dir, args),
        DialplanCommand::Test { file, plan } => {
            let plan_path = plan.unwrap_or_else(|| plan_for_tests(&file));
            let plan = load(&plan_path, &dir.known)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let suite = match Suite::parse(&file.display().to_string(), &text, &plan) {
                Ok(s) => s,
                Err(diags) => {
                    print!("{diags}");
                    bail!("{}: {}", file.display(), diags.summary());
                }
            };
            println!("testing {} against {}", file.display(), plan_path.display());
            let report = suite.run(&plan, jiff::Timestamp::now());
            print!("{report}");
            if report.failed() > 0 {
                bail!(
                    "{} of {} cases failed",
                    report.failed(),
                    report.results.len()
                );
            }
            Ok(())
        }
    }
}

/// `x.tests.toml` tests `x.toml`; any other name tests the default plan.
fn plan_for_tests(tests: &Path) -> PathBuf {
    let name = tests.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name.strip_suffix(".tests.toml") {
        Some(stem) => tests.with_file_name(format!("{stem}.toml")),
        None => PathBuf::from(DEFAULT_PLAN_PATH),
    }
}

fn split_pairs(items: &[String], sep: char, what: &str) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|h| match h.split_once(sep) {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => bail!("{what} {h:?}: expected NAME{sep}VALUE"),
        })
        .collect()
}

fn trace(dir: &Directory, args: TraceArgs) -> anyhow::Result<()> {
    let path = args
        .plan
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PLAN_PATH));
    let plan = load(&path, &dir.known)?;
    let at = match &args.at {
        Some(t) => plan.parse_time(t)?,
        None => jiff::Timestamp::now(),
    };
    let headers = split_pairs(&args.headers, ':', "--header")?;
    let mut attrs = dir
        .attrs
        .iter()
        .find(|(name, _)| *name == args.from)
        .map(|(_, a)| a.clone())
        .unwrap_or_default();
    attrs.extend(split_pairs(&args.attrs, '=', "--attr")?);
    let request = RouteRequest {
        context: args.context.as_deref(),
        trunk: args.trunk.as_deref(),
        caller: &args.from,
        caller_name: args.caller_name.as_deref(),
        called: &args.to,
        headers: &headers,
        at,
        caller_attrs: &attrs,
    };
    println!(
        "call:    {} -> {} at {}",
        args.from,
        args.to,
        at.to_zoned(plan_zone(&plan, &dir.known))
    );
    let (first, second) = route_with_digits(&plan, &request, args.digits.as_deref())?;
    print!("{first}");
    if let Some(second) = second {
        println!("after digits {}:", args.digits.as_deref().unwrap_or(""));
        print!("{second}");
    }
    Ok(())
}

fn plan_zone(plan: &Dialplan, known: &Known) -> jiff::tz::TimeZone {
    known
        .time_zones
        .get(plan.timezone())
        .unwrap_or(jiff::tz::TimeZone::UTC)
}
