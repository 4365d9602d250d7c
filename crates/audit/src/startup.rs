//! The check of the existing log at start-up: the newest part of the chain, as it was when
//! [`crate::AuditLog::open`] finished, verified with the crate's own [`crate::verify`] code.

use crate::verify::{self, VerifyError, VerifyOptions, VerifySummary};
use ed25519_dalek::VerifyingKey;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The newest [`crate::AuditConfig::startup_verify_bytes`] of the log as it stood when open
/// finished, ready to be verified with [`StartupCheck::run`]; from
/// [`crate::AuditWriter::startup_check`].
///
/// Open takes its own read handles on the files and notes their lengths before the writer
/// starts, so the check sees exactly the entries that were there at start-up: records the
/// writer appends meanwhile, and rotations (which rename files), do not disturb it. It can run
/// on any thread, while the daemon serves.
pub struct StartupCheck {
    key: VerifyingKey,
    /// Oldest first.
    parts: Vec<Part>,
    skipped_files: usize,
    /// Bytes of whole files left out (the start of the first part is added in `run`).
    skipped_file_bytes: u64,
    /// The first part is the log's first file (rotated index 1, or the active file when
    /// nothing has rotated) from byte 0, so it must start at record 1 from the genesis hash.
    from_log_start: bool,
}

struct Part {
    path: PathBuf,
    file: io::Result<File>,
    /// Where checking would begin; for the oldest part, the first whole line at or after it.
    start: u64,
    /// The file's length at open: everything before it is whole, synced lines.
    end: u64,
}

/// What [`StartupCheck::run`] verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupReport {
    /// The verification of the part checked. With `whole_log` false, its first entry was taken
    /// as the anchor (as with [`VerifyOptions::allow_partial`]): every later hash, link, seq and
    /// signature was checked.
    pub summary: VerifySummary,
    /// The files checked, oldest first, named as they were at open (a rotation since may have
    /// renamed the active one).
    pub files: Vec<PathBuf>,
    /// Byte offset in `files[0]` where checking began (the start of a line).
    pub from_offset: u64,
    /// Older files not read at all.
    pub skipped_files: usize,
    /// Bytes not read: the older files plus the first `from_offset` bytes of `files[0]`.
    pub skipped_bytes: u64,
    /// Whether the check covered the whole log, from record 1 and the genesis hash.
    pub whole_log: bool,
}

impl fmt::Display for StartupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.whole_log {
            write!(f, "the whole log verified: {}", self.summary)
        } else {
            write!(
                f,
                "the newest part of the log verified, from byte {} of {}; the {} bytes before that ({} older files) not checked: {}",
                self.from_offset,
                self.files.first().map_or_else(|| "-".into(), |p| p.display().to_string()),
                self.skipped_bytes,
                self.skipped_files,
                self.summary
            )
        }
    }
}

impl StartupCheck {
    /// Notes the newest `limit` bytes of the log: the active file (`active_len` bytes of it),
    /// then the rotated files from the newest back, as far as the limit reaches. `rotated` is
    /// in index order.
    pub(crate) fn snapshot(
        active: &Path,
        active_len: u64,
        rotated: &[(u64, PathBuf)],
        key: VerifyingKey,
        limit: u64,
    ) -> StartupCheck {
        let mut files: Vec<(PathBuf, u64)> = Vec::with_capacity(rotated.len() + 1);
        for (_, path) in rotated {
            // A rotated file was synced whole before being renamed; a failing stat shows up
            // as a read error when the check opens it.
            let len = std::fs::metadata(path).map_or(0, |m| m.len());
            files.push((path.clone(), len));
        }
        files.push((active.to_path_buf(), active_len));
        let mut parts = Vec::new();
        let mut left = limit;
        let mut skipped_files = 0;
        let mut skipped_file_bytes = 0;
        for (path, len) in files.into_iter().rev() {
            // The active file is always listed, even with nothing of it to read.
            if left == 0 && !parts.is_empty() {
                skipped_files += 1;
                skipped_file_bytes += len;
                continue;
            }
            let take = len.min(left);
            left -= take;
            let file = File::open(&path);
            parts.push(Part { path, file, start: len - take, end: len });
        }
        parts.reverse();
        let first_index_is_one = rotated.first().is_none_or(|(index, _)| *index == 1);
        let from_log_start = skipped_files == 0 && first_index_is_one && parts[0].start == 0;
        StartupCheck { key, parts, skipped_files, skipped_file_bytes, from_log_start }
    }

    /// Verifies the noted part of the log with the crate's own [`crate::verify`]: every line's
    /// hash, every link, the seq order, and every checkpoint's signature and public key (it
    /// must be the key of the log's signing key). Reads at most the noted bytes (plus the rest
    /// of the line they begin in). Returns the first problem, as `verify` reports it; its line
    /// numbers count from the start of the file.
    pub fn run(self) -> Result<StartupReport, VerifyError> {
        let StartupCheck { key, parts, skipped_files, skipped_file_bytes, from_log_start } = self;
        let mut names: Vec<PathBuf> = Vec::with_capacity(parts.len());
        let io_error = |path: &Path, e: io::Error| VerifyError {
            file: path.to_path_buf(),
            line: 0,
            record: 0,
            checkpoint: false,
            reason: verify::Reason::Io(e.to_string()),
        };
        let mut readers: Vec<Option<io::Result<BufReader<io::Take<File>>>>> = Vec::with_capacity(parts.len());
        let mut from_offset = 0;
        // A second handle on the first file, to count the lines before `from_offset` when an
        // error must name a line.
        let mut head: Option<File> = None;
        for (i, part) in parts.into_iter().enumerate() {
            let Part { path, file, start, end } = part;
            let reader = match file {
                Ok(file) if i == 0 && start > 0 => {
                    head = file.try_clone().ok();
                    let (reader, offset) = from_line_start(file, start, end).map_err(|e| io_error(&path, e))?;
                    from_offset = offset;
                    Ok(reader)
                }
                Ok(file) => Ok(BufReader::new(file.take(end))),
                Err(e) => Err(e),
            };
            readers.push(Some(reader));
            names.push(path);
        }
        let paths: Vec<&Path> = names.iter().map(PathBuf::as_path).collect();
        let options = VerifyOptions { allow_partial: !from_log_start };
        let open = |i: usize| readers[i].take().unwrap_or_else(|| Err(io::Error::other("read twice")));
        let summary = verify::verify_sources(&paths, open, &key, &options).map_err(|mut e| {
            if from_offset > 0 && e.file == paths[0] && e.line > 0 {
                match head.as_mut().map(|f| lines_before(f, from_offset)) {
                    Some(Ok(before)) => e.line += before,
                    // Cannot count them: say where checking began instead of a wrong number.
                    _ => e.line = 0,
                }
            }
            e
        })?;
        Ok(StartupReport {
            summary,
            files: paths.iter().map(|p| p.to_path_buf()).collect(),
            from_offset,
            skipped_files,
            skipped_bytes: skipped_file_bytes + from_offset,
            whole_log: from_log_start,
        })
    }
}

/// A reader of `file` from the first line that starts at or after `start`, up to `end`, and
/// that line's offset.
fn from_line_start(mut file: File, start: u64, end: u64) -> io::Result<(BufReader<io::Take<File>>, u64)> {
    // Reading from the byte before `start`: if it is a newline, a line starts at `start`.
    file.seek(SeekFrom::Start(start - 1))?;
    let mut reader = BufReader::new(file.take(end - (start - 1)));
    let mut skipped = Vec::new();
    let n = reader.read_until(b'\n', &mut skipped)?;
    Ok((reader, start - 1 + n as u64))
}

fn lines_before(file: &mut File, offset: u64) -> io::Result<u64> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(file.take(offset));
    let mut lines = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(lines);
        }
        lines += buf.iter().filter(|b| **b == b'\n').count() as u64;
        let n = buf.len();
        reader.consume(n);
    }
}
