//! `segkv-tool`: look inside segkv data directories. Read-only on its input; safe to run
//! beside a live server.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use segkv_engine::{Config, Engine, FsyncPolicy, SetExpiry, SetOptions};
use segkv_tools::{MAX_DATABASES, Replay, json_bytes, now_ms, resp_command};

#[derive(Parser)]
#[command(
    name = "segkv-tool",
    version,
    about = "Inspect, verify, dump and compact segkv data directories"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Segments, sizes, live and dead bytes, record counts by kind, expiry histogram.
    Inspect {
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check every record's CRC and the segment chain; exit 0 when clean, 1 with each problem's
    /// file and offset otherwise.
    Verify { dir: PathBuf },
    /// Live keys with their values and TTLs.
    Dump {
        dir: PathBuf,
        /// Only this database.
        #[arg(long)]
        db: Option<usize>,
        /// Only keys matching this glob pattern (Redis's rules).
        #[arg(long = "match")]
        pattern: Option<String>,
        /// `resp` can be piped into `redis-cli --pipe`; `json` is one object per line.
        #[arg(long, value_enum, default_value_t = Format::Resp)]
        format: Format,
    },
    /// Write the live content into a new directory, leaving dead records behind.
    Compact {
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Resp,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("segkv-tool: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load(dir: &Path) -> anyhow::Result<Replay> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} segments").unwrap());
    bar.set_message("reading");
    let r = Replay::load(dir, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("reading {}", dir.display()))?;
    bar.finish_and_clear();
    Ok(r)
}

fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Inspect { dir, json } => {
            let mut r = load(&dir)?;
            let now = now_ms();
            r.account_live(now);
            inspect(&r, now, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify { dir } => {
            let r = load(&dir)?;
            let records: u64 = r.segs.iter().map(|s| s.by_kind.iter().sum::<u64>()).sum();
            for s in &r.segs {
                for (off, why, tail) in &s.damaged {
                    if *tail {
                        println!(
                            "note: {}: torn tail at offset {off} ({why}); recovery cuts the log there",
                            s.path
                        );
                    }
                }
            }
            let problems = r.problems();
            for (path, off, why) in &problems {
                println!("{path}: offset {off}: {why}");
            }
            if problems.is_empty() {
                println!(
                    "ok: {} segments, {records} records, every checksum verified",
                    r.segs.len()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{} problem(s) found", problems.len());
                Ok(ExitCode::from(1))
            }
        }
        Cmd::Dump {
            dir,
            db,
            pattern,
            format,
        } => {
            if let Some(d) = db {
                anyhow::ensure!(
                    d < MAX_DATABASES,
                    "database {d} out of range (0..{MAX_DATABASES})"
                );
            }
            let r = load(&dir)?;
            dump(&r, db, pattern.as_deref().map(str::as_bytes), format)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Compact { dir, out } => {
            let r = load(&dir)?;
            compact(&r, &out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Calls `f(db, key, value, expire_at)` for each live key, in log order of their newest records.
fn for_each_live(
    r: &Replay,
    db: Option<usize>,
    pattern: Option<&[u8]>,
    mut f: impl FnMut(usize, &[u8], &[u8], Option<u64>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let now = now_ms();
    for (i, file) in r.files.iter().enumerate() {
        let seg = file.load()?;
        for item in seg.items(true) {
            let segkv_log::inspect::Item::Record { offset, view, .. } = item else {
                continue;
            };
            let Some(l) = r.latest.get(&(view.keyspace, view.key.to_vec())) else {
                continue;
            };
            if l.seg != i || l.offset != offset || !Replay::is_live(l, now) {
                continue;
            }
            let Some(d) = r.db_of(view.keyspace) else {
                continue;
            };
            if db.is_some_and(|want| want != d) {
                continue;
            }
            if pattern.is_some_and(|p| !segkv_server::glob::matches(p, view.key, false)) {
                continue;
            }
            f(d, view.key, view.value, view.expire_at)?;
        }
    }
    Ok(())
}

fn dump(
    r: &Replay,
    db: Option<usize>,
    pattern: Option<&[u8]>,
    format: Format,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut selected: Option<usize> = None;
    let mut buf = Vec::new();
    for_each_live(r, db, pattern, |d, key, value, exp| {
        buf.clear();
        match format {
            Format::Resp => {
                if selected != Some(d) {
                    resp_command(&mut buf, &[b"SELECT", d.to_string().as_bytes()]);
                    selected = Some(d);
                }
                match exp {
                    Some(t) => resp_command(
                        &mut buf,
                        &[b"SET", key, value, b"PXAT", t.to_string().as_bytes()],
                    ),
                    None => resp_command(&mut buf, &[b"SET", key, value]),
                }
            }
            Format::Json => {
                let mut s = format!("{{\"db\":{d},\"key\":");
                json_bytes(&mut s, key);
                s.push_str(",\"value\":");
                json_bytes(&mut s, value);
                match exp {
                    Some(t) => s.push_str(&format!(",\"expire_at_ms\":{t}}}\n")),
                    None => s.push_str(",\"expire_at_ms\":null}\n"),
                }
                buf.extend_from_slice(s.as_bytes());
            }
        }
        out.write_all(&buf)?;
        Ok(())
    })?;
    out.flush()?;
    Ok(())
}

/// Bytes the log's data takes: segment headers and records (not preallocated space).
fn used_bytes(r: &Replay) -> u64 {
    r.segs
        .iter()
        .map(|s| segkv_log::segment::SEGMENT_HEADER_LEN + s.data_bytes)
        .sum()
}

fn compact(r: &Replay, out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !out.exists() || std::fs::read_dir(out)?.next().is_none(),
        "{} exists and is not empty",
        out.display()
    );
    let mut cfg = Config::new(out);
    cfg.appendfsync = FsyncPolicy::No;
    let engine = Engine::open(cfg).with_context(|| format!("creating {}", out.display()))?;
    let mut keys = 0u64;
    for_each_live(r, None, None, |d, key, value, exp| {
        let expiry = exp.map_or(SetExpiry::Persist, SetExpiry::At);
        engine.set(
            d,
            key,
            value,
            SetOptions {
                expiry,
                ..Default::default()
            },
        )?;
        keys += 1;
        Ok(())
    })?;
    engine.sync()?;
    drop(engine);
    let before = used_bytes(r);
    let after = used_bytes(&Replay::load(out, |_, _| {})?);
    println!(
        "compacted {keys} live keys: {before} bytes -> {after} bytes ({} saved)",
        before.saturating_sub(after)
    );
    Ok(())
}

fn inspect(r: &Replay, now: u64, json: bool) -> anyhow::Result<()> {
    // Expiry histogram of live keys, by time left.
    let bounds: [(&str, u64); 5] = [
        ("<1m", 60_000),
        ("<1h", 3_600_000),
        ("<1d", 86_400_000),
        ("<7d", 7 * 86_400_000),
        (">=7d", u64::MAX),
    ];
    let mut hist = [0u64; 6]; // no ttl, then the bounds
    let mut per_db = [0u64; MAX_DATABASES];
    for ((ks, _), l) in &r.latest {
        if !Replay::is_live(l, now) {
            continue;
        }
        if let Some(d) = r.db_of(*ks) {
            per_db[d] += 1;
        }
        match l.expire_at {
            None => hist[0] += 1,
            Some(t) => {
                let left = t - now;
                let b = bounds.iter().position(|(_, lim)| left < *lim).unwrap_or(4);
                hist[b + 1] += 1;
            }
        }
    }
    let kinds = ["?", "put", "delete", "flushdb", "swapdb", "dbmap", "?", "?"];
    let mut s = String::new();
    if json {
        s.push_str("{\"segments\":[");
        for (i, g) in r.segs.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str("{\"file\":");
            json_bytes(&mut s, g.path.as_bytes());
            s.push_str(&format!(
                ",\"base\":{},\"bytes\":{},\"record_bytes\":{},\"live_bytes\":{},\"dead_bytes\":{},\"invalid\":{},\"records\":{{",
                g.base,
                g.file_len,
                g.data_bytes,
                g.live_bytes,
                g.data_bytes - g.live_bytes,
                g.invalid
            ));
            let parts: Vec<String> = (1..5)
                .map(|k| format!("\"{}\":{}", kinds[k], g.by_kind[k]))
                .collect();
            s.push_str(&parts.join(","));
            s.push_str(&format!("}},\"damaged\":{}}}", g.damaged.len()));
        }
        s.push_str("],\"keys_per_db\":{");
        let parts: Vec<String> = per_db
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(d, n)| format!("\"{d}\":{n}"))
            .collect();
        s.push_str(&parts.join(","));
        s.push_str("},\"expiry\":{");
        let mut parts = vec![format!("\"none\":{}", hist[0])];
        parts.extend(
            bounds
                .iter()
                .enumerate()
                .map(|(i, (n, _))| format!("\"{n}\":{}", hist[i + 1])),
        );
        s.push_str(&parts.join(","));
        s.push_str("}}\n");
    } else {
        s.push_str(&format!(
            "{:<40} {:>12} {:>12} {:>12} {:>9} {:>9} {:>7} {:>7} {:>7} {:>8}\n",
            "segment",
            "bytes",
            "live",
            "dead",
            "put",
            "delete",
            "flush",
            "swapdb",
            "invalid",
            "damaged"
        ));
        let (mut tb, mut tl, mut td) = (0, 0, 0);
        for g in &r.segs {
            let name = Path::new(&g.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dead = g.data_bytes - g.live_bytes;
            s.push_str(&format!(
                "{:<40} {:>12} {:>12} {:>12} {:>9} {:>9} {:>7} {:>7} {:>7} {:>8}\n",
                name,
                g.file_len,
                g.live_bytes,
                dead,
                g.by_kind[1],
                g.by_kind[2],
                g.by_kind[3],
                g.by_kind[4],
                g.invalid,
                g.damaged.len()
            ));
            tb += g.file_len;
            tl += g.live_bytes;
            td += dead;
        }
        s.push_str(&format!("{:<40} {tb:>12} {tl:>12} {td:>12}\n", "total"));
        s.push_str("\nlive keys per database:");
        for (d, n) in per_db.iter().enumerate().filter(|(_, n)| **n > 0) {
            s.push_str(&format!(" db{d}={n}"));
        }
        s.push_str("\nexpiry of live keys: ");
        s.push_str(&format!("none={}", hist[0]));
        for (i, (n, _)) in bounds.iter().enumerate() {
            s.push_str(&format!(" {n}={}", hist[i + 1]));
        }
        s.push('\n');
    }
    std::io::stdout().write_all(s.as_bytes())?;
    Ok(())
}
