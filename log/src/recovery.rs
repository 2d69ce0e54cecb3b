//! Recovery: map every segment back, verify each record's CRC, cut a torn tail, and replay
//! records in address order.
//!
//! A bad record is a *torn tail* when nothing valid follows it anywhere in the log: the flusher
//! writes in address order, so only the end of what reached the disk can be partial. A bad
//! record with a valid record after it is corruption: an error naming the file and offset,
//! unless `recover_corrupt` is set, in which case it is skipped and reported.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::LogError;
use crate::log::{LogConfig, RecoveryReport};
use crate::mem::SegMem;
use crate::record::{self, DecodeError, RecordView, Scanned};
use crate::segment::{
    SEGMENT_HEADER_LEN, SegStats, Segment, SegmentHeader, UNIT, parse_segment_file_name,
};

/// Largest capacity a segment header may claim: the largest `segment-size` the server accepts
/// (a segment made for one large record is at most about 1 GiB).
const MAX_SEGMENT_CAPACITY: u64 = 1 << 40;

/// Segment files in `dir`, sorted by base address.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| LogError::io("read data directory", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| LogError::io("read data directory", dir, e))?;
        let name = ent.file_name();
        if let Some(base) = name.to_str().and_then(parse_segment_file_name) {
            out.push((base, ent.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `data` holds a valid record at some 4-aligned offset at or after `from`.
pub(crate) fn valid_record_after(data: &[u8], from: usize) -> Option<usize> {
    let mut p = from.next_multiple_of(4);
    while p + record::HEADER_LEN <= data.len() {
        if let Ok(Scanned::Record(..)) = record::scan(&data[p..]) {
            return Some(p);
        }
        p += 4;
    }
    None
}

struct Opened {
    path: PathBuf,
    file: File,
    header: SegmentHeader,
    mem: SegMem,
    file_len: u64,
}

fn open_segment(base: u64, path: &Path) -> Result<Result<Opened, String>, LogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| LogError::io("open segment", path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| LogError::io("stat segment", path, e))?
        .len();
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    if file_len < SEGMENT_HEADER_LEN {
        return Ok(Err("file shorter than a segment header".into()));
    }
    file.read_exact_at(&mut h, 0)
        .map_err(|e| LogError::io("read segment header", path, e))?;
    let header = match SegmentHeader::decode(&h) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    if header.base != base {
        return Ok(Err(format!(
            "header says base {:#x}, file name says {base:#x}",
            header.base
        )));
    }
    let mem = SegMem::map_file(&file).map_err(|e| LogError::io("map segment", path, e))?;
    Ok(Ok(Opened {
        path: path.to_path_buf(),
        file,
        header,
        mem,
        file_len,
    }))
}

/// Why a segment whose header checks out cannot be one this log wrote, if it cannot: its
/// address range must start on a unit, hold the whole file, and end before the next segment's
/// base. A header with a good CRC and such a range is corruption, never a torn write.
fn range_error(o: &Opened, next_base: Option<u64>) -> Option<String> {
    let (base, capacity) = (o.header.base, o.header.capacity);
    if !base.is_multiple_of(UNIT) {
        return Some(format!("base {base:#x} is not a multiple of {UNIT:#x}"));
    }
    if !(SEGMENT_HEADER_LEN..=MAX_SEGMENT_CAPACITY).contains(&capacity) {
        return Some(format!("impossible segment capacity {capacity}"));
    }
    if o.file_len > capacity {
        return Some(format!(
            "file of {} bytes is longer than its capacity {capacity}",
            o.file_len
        ));
    }
    let Some(end) = base.checked_add(capacity.div_ceil(UNIT) * UNIT) else {
        return Some("segment runs past the end of the address space".into());
    };
    match next_base {
        Some(next) if end > next => Some(format!(
            "segment of capacity {capacity} overlaps the next one at {next:#x}"
        )),
        _ => None,
    }
}

/// Whether the segment's first record is valid (used to tell a torn tail from corruption).
fn starts_with_valid_record(o: &Opened) -> bool {
    let data = o.mem.bytes(0, o.file_len as usize);
    matches!(
        record::scan(&data[SEGMENT_HEADER_LEN as usize..]),
        Ok(Scanned::Record(..))
    )
}

pub(crate) fn recover(
    cfg: &LogConfig,
    visit: &mut dyn FnMut(u64, RecordView<'_>),
) -> Result<(Vec<Arc<Segment>>, RecoveryReport), LogError> {
    let mut report = RecoveryReport::default();
    let files = list_segments(&cfg.dir)?;
    let mut opened: Vec<Opened> = Vec::new();
    for (i, (base, path)) in files.iter().enumerate() {
        match open_segment(*base, path)? {
            Ok(o) => match range_error(&o, files.get(i + 1).map(|f| f.0)) {
                None => opened.push(o),
                Some(why) if cfg.recover_corrupt => report.skipped.push((path.clone(), 0, why)),
                Some(why) => {
                    return Err(LogError::Corrupt {
                        path: path.clone(),
                        offset: 0,
                        why,
                    });
                }
            },
            Err(why) => {
                // A trailing file whose header never reached the disk held no synced data
                // (the header is written before any record, and synced with the first one).
                let trailing = files[i + 1..].is_empty();
                if trailing {
                    std::fs::remove_file(path)
                        .map_err(|e| LogError::io("remove empty segment", path, e))?;
                    report.removed_files.push(path.clone());
                } else if cfg.recover_corrupt {
                    report.skipped.push((path.clone(), 0, why));
                } else {
                    return Err(LogError::Corrupt {
                        path: path.clone(),
                        offset: 0,
                        why,
                    });
                }
            }
        }
    }

    let mut segments = Vec::new();
    // Segments an index checkpoint covers are not read: their counters are unknown.
    let stats: Vec<SegStats> = opened
        .iter()
        .map(|o| {
            if cfg.replay_from > o.header.base + SEGMENT_HEADER_LEN {
                SegStats::unknown()
            } else {
                SegStats::new()
            }
        })
        .collect();
    let mut stop_after: Option<usize> = None;
    for i in 0..opened.len() {
        let data_end;
        {
            let o = &opened[i];
            let data = o.mem.bytes(0, o.file_len as usize);
            let mut p = SEGMENT_HEADER_LEN as usize;
            let end = o.header.base + o.file_len;
            let last = i + 1 == opened.len();
            if cfg.replay_from >= end && !last {
                // Wholly before the checkpoint's address: sealed, its data is the whole file.
                report.bytes += o.file_len;
                continue;
            }
            if cfg.replay_from > o.header.base + p as u64 {
                // The checkpoint's address is a record boundary in this segment.
                p = (cfg.replay_from - o.header.base).min(o.file_len) as usize;
            }
            loop {
                match record::scan(&data[p..]) {
                    Ok(Scanned::Record(view, n)) => {
                        stats[i].note(view.kind, view.expire_at);
                        visit(o.header.base + p as u64, view);
                        report.records += 1;
                        p += n;
                    }
                    Ok(Scanned::Invalid(n)) => {
                        report.invalid_records += 1;
                        p += n;
                    }
                    Ok(Scanned::End) | Err(DecodeError::Unwritten) => {
                        data_end = p;
                        if cfg.reopen_tail && !last && (p as u64) < o.file_len {
                            // A replica's copy whose segment was not finished (its file still
                            // has the preallocated zeros) before a later one: the later ones
                            // may have reached the disk before this one's tail did. What
                            // follows goes, and is copied again from the primary.
                            report.truncated = Some((o.path.clone(), p as u64));
                            stop_after = Some(i);
                        }
                        break;
                    }
                    Err(e) => {
                        let later_in_file = valid_record_after(data, p + 4);
                        let later_file = opened[i + 1..].iter().any(starts_with_valid_record);
                        if later_in_file.is_none() && !later_file {
                            report.truncated = Some((o.path.clone(), p as u64));
                            data_end = p;
                            stop_after = Some(i);
                            break;
                        }
                        if !cfg.recover_corrupt {
                            return Err(LogError::Corrupt {
                                path: o.path.clone(),
                                offset: p as u64,
                                why: e.to_string(),
                            });
                        }
                        report
                            .skipped
                            .push((o.path.clone(), p as u64, e.to_string()));
                        match later_in_file {
                            Some(q) => p = q,
                            None => {
                                data_end = p;
                                break;
                            }
                        }
                    }
                }
                if p >= data.len() {
                    data_end = data.len();
                    break;
                }
            }
        }
        report.bytes += data_end as u64;
        let o = &opened[i];
        if o.file_len != data_end as u64 {
            // Preallocated space or a cut tail: make the file end where its data ends. (A
            // clean close leaves every file ending at its data: this one was not closed.)
            report.unclean = true;
            o.file
                .set_len(data_end as u64)
                .map_err(|e| LogError::io("truncate segment", &o.path, e))?;
        }
        if stop_after.is_some() {
            break;
        }
    }
    let keep = stop_after.map_or(opened.len(), |i| i + 1);
    for o in opened.drain(keep..) {
        std::fs::remove_file(&o.path)
            .map_err(|e| LogError::io("remove segment after torn tail", &o.path, e))?;
        report.removed_files.push(o.path);
    }
    for (o, stats) in opened.into_iter().zip(stats) {
        if o.file
            .metadata()
            .map_err(|e| LogError::io("stat segment", &o.path, e))?
            .len()
            == SEGMENT_HEADER_LEN
        {
            // No record was ever written here (e.g. the fresh segment of a run that wrote nothing).
            drop(o.mem);
            std::fs::remove_file(&o.path)
                .map_err(|e| LogError::io("remove empty segment", &o.path, e))?;
            report.removed_files.push(o.path);
            continue;
        }
        let data_end = o
            .file
            .metadata()
            .map_err(|e| LogError::io("stat segment", &o.path, e))?
            .len();
        drop(o.mem);
        let mem = SegMem::map_file(&o.file).map_err(|e| LogError::io("map segment", &o.path, e))?;
        segments.push(Arc::new(Segment::sealed(
            o.path, o.file, o.header, data_end, mem, stats,
        )));
    }
    report.segments = segments.len();
    Ok((segments, report))
}
