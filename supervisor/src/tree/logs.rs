//! Where an external command's stdout and stderr go: inherited, discarded, or a log file
//! rotated by size (keep N), as supervisord's `stdout_logfile_maxbytes` / `_backups` do.
//!
//! A file output is a pipe: the child writes into it, and a task on procvisor's runtime
//! copies what arrives into the file, rotating it before a write would pass the limit. The
//! task ends when every writer of the pipe has closed it (the child and anything it left
//! behind), so nothing the child wrote is lost to a restart.
//!
//! # Lines and rotation
//!
//! Rotation happens between lines, never inside one: a line that would take the file past
//! `max_bytes` starts the next file. A pipe read may end in the middle of a line, so the
//! start of a line whose newline has not come yet is held back (at most [`HOLD_MAX`]
//! bytes) and written with the rest of it; at the end of the stream it is written as it
//! is. Whatever the child writes, a pump holds at most its read buffer and [`HOLD_MAX`].
//!
//! # Caveats
//!
//! - A line longer than `max_bytes`, or than [`HOLD_MAX`] (a stream with no newlines at
//!   all, such as a progress bar drawn with `\r`), is not held: it starts a fresh file and
//!   is written as it arrives, filling each file to `max_bytes`, so it is split across
//!   files. That keeps both the memory and every file's size bounded.
//! - A held partial line shows up in the file only once its newline comes (or at the end of
//!   the stream, or once it outgrows the bound): a prompt with no newline stays unseen.
//! - A restarted child appends to the same file; a partial last line of the run before is
//!   not closed with a newline, so the new run's first line continues it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncReadExt;

use super::{ChildSpec, Target};

/// The most of one line held back waiting for its newline; a longer line is written out
/// as it comes, and may be split across files. With the read buffer of the same size, this
/// bounds a pump's memory.
const HOLD_MAX: usize = 64 * 1024;

/// How much one read from the pipe takes.
const READ_BUF: usize = 64 * 1024;

/// Where one of a command's output streams goes.
///
/// ```
/// use procvisor::tree::{LogFile, Output};
/// let out = Output::File(LogFile::new("/tmp/worker.log").max_bytes(1 << 20).keep(3));
/// assert!(matches!(out, Output::File(_)));
/// assert!(matches!(Output::default(), Output::Inherit));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Output {
    /// The supervising process's own stream. The default.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A file, rotated by size.
    File(LogFile),
}

impl Output {
    /// The same output for replica `i` of a group: a file becomes the replica's own file
    /// (see [`LogFile::for_replica`]); the other outputs are shared as they are.
    pub(crate) fn for_replica(&self, i: usize) -> Output {
        match self {
            Output::File(log) => Output::File(log.for_replica(i)),
            other => other.clone(),
        }
    }
}

/// A log file rotated by size: when a write would take it past `max_bytes`, `path` becomes
/// `path.1`, `path.1` becomes `path.2`, and so on up to `path.<keep>`; the oldest goes.
///
/// Rotation falls between lines: a line that would take the file past `max_bytes` starts
/// the next file, wherever the child's writes or the pipe's reads cut it. Until its newline
/// comes, the start of a line is held back (at most 64 KiB of it), and it is written as it
/// is at the end of the stream if the newline never comes. A line longer than `max_bytes`
/// or 64 KiB (a progress bar drawn with `\r`, a stream with no newlines) is not held: it
/// starts a fresh file and is written as it arrives, filling each file to `max_bytes`, so
/// it is split across files. That way memory and every file's size stay bounded whatever
/// the child writes.
///
/// Defaults: 10 MiB, keep 5 (supervisord's `50MB` / `10` are sized for a few programs per
/// host; a library may run many).
///
/// A child made with [`ChildSpec::replicas`] gets a file of its own per replica, the index
/// put before the extension: `worker.log` is written as `worker.0.log`, `worker.1.log`, …
/// (and `worker` as `worker.0`, …), each rotated on its own.
///
/// ```
/// let log = procvisor::tree::LogFile::new("/var/tmp/app.log").max_bytes(4096).keep(2);
/// assert_eq!(log.path(), std::path::Path::new("/var/tmp/app.log"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The path given; a replica's file is beside it (see [`LogFile::file`]).
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    /// Whose log this is, in a group of replicas. An index rather than the replica's path:
    /// a replica added later by scaling is then named from the group's path, not from
    /// another replica's (and `Command` stays small).
    replica: Option<u32>,
}

impl LogFile {
    /// A log at `path`, with the default size and count.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LogFile {
            path: path.into(),
            max_bytes: 10 << 20,
            keep: 5,
            replica: None,
        }
    }

    /// Rotate before the file would pass `max_bytes` (at least 1).
    ///
    /// ```
    /// let log = procvisor::tree::LogFile::new("a.log").max_bytes(0);
    /// # let _ = log;
    /// ```
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Keep this many rotated files (0: the file is truncated instead).
    ///
    /// ```
    /// let log = procvisor::tree::LogFile::new("a.log").keep(0);
    /// # let _ = log;
    /// ```
    pub fn keep(mut self, keep: u32) -> Self {
        self.keep = keep;
        self
    }

    /// The file's path, as given to [`LogFile::new`]. (The replicas of a
    /// [`ChildSpec::replicas`] group write beside it, as the type's docs say.)
    ///
    /// ```
    /// assert_eq!(procvisor::tree::LogFile::new("x.log").path().to_str(), Some("x.log"));
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log of replica `i`, same size and count: see [`LogFile::file`]. Made from a
    /// replica's log, it is the group's log of replica `i` again.
    ///
    /// ```
    /// let log = procvisor::tree::LogFile::new("/var/log/worker.log");
    /// assert_eq!(log.for_replica(2).file().to_str(), Some("/var/log/worker.2.log"));
    /// ```
    pub fn for_replica(&self, i: usize) -> LogFile {
        LogFile {
            replica: Some(u32::try_from(i).expect("a group has fewer than 2^32 replicas")),
            ..self.clone()
        }
    }

    /// The file written: `path`, or for replica `i`, `dir/stem.i.ext` beside it
    /// (`worker.log` → `worker.0.log`, `worker` → `worker.0`).
    ///
    /// ```
    /// let log = procvisor::tree::LogFile::new("worker");
    /// assert_eq!(log.file().to_str(), Some("worker"));
    /// assert_eq!(log.for_replica(0).file().to_str(), Some("worker.0"));
    /// ```
    pub fn file(&self) -> PathBuf {
        let Some(i) = self.replica else {
            return self.path.clone();
        };
        let mut name = self.path.file_stem().unwrap_or_default().to_os_string();
        name.push(format!(".{i}"));
        if let Some(ext) = self.path.extension() {
            name.push(".");
            name.push(ext);
        }
        self.path.with_file_name(name)
    }

    /// The `n`th rotated file (`file.n`).
    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.file().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// The longest line held back whole: longer ones are written as they come.
    fn hold_max(&self) -> usize {
        usize::try_from(self.max_bytes).map_or(HOLD_MAX, |max| max.min(HOLD_MAX))
    }
}

// Here rather than in `tree.rs`: what a replica changes is its log files.
impl ChildSpec {
    /// The spec of replica `i` of this group: its command's log files are its own.
    pub(crate) fn for_replica(&self, i: usize) -> ChildSpec {
        let mut spec = self.clone();
        if let Target::Command(cmd) = &mut spec.target {
            cmd.stdout = cmd.stdout.for_replica(i);
            cmd.stderr = cmd.stderr.for_replica(i);
        }
        spec
    }
}

/// A log file open for appending, that rotates itself between lines.
///
/// Bytes come to [`write`](Self::write) as the pipe gives them, cut anywhere, and the
/// stream ends with [`finish`](Self::finish). Where the reads cut makes no difference to
/// the files (for lines up to [`HOLD_MAX`]):
///
/// - a line of at most `max_bytes` (and `HOLD_MAX`) goes whole into the current file if it
///   fits, and into a fresh one if not;
/// - a longer line starts a fresh file (unless the current one is empty) and fills files of
///   `max_bytes` each as it arrives.
#[derive(Debug)]
pub(crate) struct RotatingWriter {
    spec: LogFile,
    /// `spec.file()`, once.
    path: PathBuf,
    file: File,
    len: u64,
    /// The start of the current line, waiting for its newline: at most `spec.hold_max()`
    /// bytes, and allocated once, at that size, when first needed.
    held: Vec<u8>,
    /// The current line was too long to hold: the rest of it goes out as it comes.
    spilling: bool,
}

impl RotatingWriter {
    /// Opens (or creates) the log, appending to what is there.
    pub(crate) fn open(spec: LogFile) -> io::Result<Self> {
        let path = spec.file();
        let file = Self::open_file(&path)?;
        let len = file.metadata()?.len();
        Ok(RotatingWriter {
            spec,
            path,
            file,
            len,
            held: Vec::new(),
            spilling: false,
        })
    }

    fn open_file(path: &Path) -> io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Writes `data`, which may start or end in the middle of a line.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // At a line start, the whole lines go out in as few writes as they can; what is
            // left has no newline. Mid-line, nothing is whole until the next newline.
            let whole = if self.held.is_empty() && !self.spilling {
                data.iter().rposition(|&b| b == b'\n').map_or(0, |k| k + 1)
            } else {
                0
            };
            self.lines(&data[..whole])?;
            let rest = &data[whole..];
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |k| k + 1);
            self.part(&rest[..end])?;
            data = &rest[end..];
        }
        Ok(())
    }

    /// Ends the stream: a held partial line is written as it is, with no newline added.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        self.spilling = false;
        self.place_held()
    }

    /// Whole lines (`data` is empty or ends with a newline): those that fit go into the
    /// current file in one write, and the file rotates before the first that does not.
    fn lines(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = self.room();
            let fit = if data.len() <= room {
                data.len()
            } else {
                data[..room]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |k| k + 1)
            };
            if fit > 0 {
                self.put(&data[..fit])?;
                data = &data[fit..];
                continue;
            }
            let first = data
                .iter()
                .position(|&b| b == b'\n')
                .map_or(data.len(), |k| k + 1);
            if first > self.spec.hold_max() {
                self.part(&data[..first])?;
                data = &data[first..];
            } else {
                // The line fits an empty file, so this one is not empty: progress.
                self.rotate()?;
            }
        }
        Ok(())
    }

    /// A piece of the current line: its start or middle, or its end (with the newline).
    fn part(&mut self, piece: &[u8]) -> io::Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        let ends = piece.ends_with(b"\n");
        if !self.spilling && self.held.len() + piece.len() > self.spec.hold_max() {
            // Too long to hold (or for any file to take whole): from a fresh file, as it
            // comes. What was held fits there, being at most `max_bytes`.
            if self.len > 0 {
                self.rotate()?;
            }
            self.write_held()?;
            self.spilling = true;
        }
        if self.spilling {
            self.fill(piece)?;
            self.spilling = !ends;
            return Ok(());
        }
        if self.held.capacity() == 0 {
            // Once, at the bound: growing by doubling could overshoot it.
            self.held.reserve_exact(self.spec.hold_max());
        }
        self.held.extend_from_slice(piece);
        if ends {
            self.place_held()?;
        }
        Ok(())
    }

    /// Writes the held line whole: into the current file if it fits, else a fresh one.
    fn place_held(&mut self) -> io::Result<()> {
        if self.held.len() > self.room() && self.len > 0 {
            self.rotate()?;
        }
        self.write_held()
    }

    fn write_held(&mut self) -> io::Result<()> {
        self.file.write_all(&self.held)?;
        self.len += self.held.len() as u64;
        self.held.clear();
        Ok(())
    }

    /// Part of a line longer than a file: the current file is filled to `max_bytes`, then
    /// the next.
    fn fill(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = self.room();
            if room == 0 {
                self.rotate()?;
                continue;
            }
            let take = room.min(data.len());
            self.put(&data[..take])?;
            data = &data[take..];
        }
        Ok(())
    }

    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// What the current file can still take.
    fn room(&self) -> usize {
        usize::try_from(self.spec.max_bytes.saturating_sub(self.len)).unwrap_or(usize::MAX)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.spec.keep == 0 {
            self.file.set_len(0)?;
            self.len = 0;
            return Ok(());
        }
        // Oldest first, so that no rename overwrites a file still to be moved.
        for n in (1..self.spec.keep).rev() {
            match fs::rename(self.spec.rotated(n), self.spec.rotated(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, self.spec.rotated(1))?;
        self.file = Self::open_file(&self.path)?;
        self.len = 0;
        Ok(())
    }
}

/// The two streams of one command, ready for `std::process::Command`, and the pumps to run
/// once it has started.
#[derive(Debug)]
pub(crate) struct Streams {
    stdout: Stdio,
    stderr: Stdio,
    pumps: Pumps,
}

/// The read ends of a command's log pipes, each with its file.
#[derive(Debug)]
pub(crate) struct Pumps(Vec<(OwnedFd, RotatingWriter)>);

impl Streams {
    /// Opens the files and pipes. Equal files for both streams share one pipe and one
    /// writer, so the lines interleave as the child wrote them.
    pub(crate) fn open(stdout: &Output, stderr: &Output) -> io::Result<Streams> {
        let mut pumps = Vec::new();
        let mut shared: Option<(LogFile, OwnedFd)> = None;
        let mut stdio = |out: &Output| -> io::Result<Stdio> {
            Ok(match out {
                Output::Inherit => Stdio::inherit(),
                Output::Null => Stdio::null(),
                Output::File(log) => {
                    if let Some((_, w)) = shared.as_ref().filter(|(l, _)| l == log) {
                        return Ok(Stdio::from(w.try_clone()?));
                    }
                    let writer = RotatingWriter::open(log.clone())?;
                    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                    pumps.push((r, writer));
                    shared = Some((log.clone(), w.try_clone()?));
                    Stdio::from(w)
                }
            })
        };
        let stdout = stdio(stdout)?;
        let stderr = stdio(stderr)?;
        Ok(Streams {
            stdout,
            stderr,
            pumps: Pumps(pumps),
        })
    }

    /// The child's stdout and stderr, and the pumps to start once it runs.
    pub(crate) fn split(self) -> (Stdio, Stdio, Pumps) {
        (self.stdout, self.stderr, self.pumps)
    }
}

impl Pumps {
    /// Starts copying each pipe into its file, on the current tokio runtime. Returns the
    /// pumps' errors through `report` (a full disk, a removed directory).
    pub(crate) fn pump(self, report: impl Fn(io::Error) + Clone + 'static) {
        for (read, writer) in self.0 {
            let report = report.clone();
            actix_rt::spawn(async move {
                if let Err(e) = copy(read, writer).await {
                    report(e);
                }
            });
        }
    }
}

/// Copies the pipe into the log until every writer has closed it.
async fn copy(read: OwnedFd, mut writer: RotatingWriter) -> io::Result<()> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
    let mut buf = vec![0u8; READ_BUF];
    let read = loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => writer.write(&buf[..n])?,
            Err(e) => break Err(e),
        }
    };
    // A held partial line is written even when the read failed: it may be the child's last
    // words.
    writer.finish()?;
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("procvisor-logs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// The log's files, oldest first.
    fn files(log: &LogFile) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = (1..=log.keep)
            .rev()
            .filter_map(|n| fs::read(log.rotated(n)).ok())
            .collect();
        out.push(fs::read(log.file()).unwrap());
        out
    }

    /// Writes `input` into a fresh log, in reads cut at `cuts`, and ends the stream;
    /// returns the files, oldest first.
    fn run(log: &LogFile, input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        for n in 1..=log.keep + 1 {
            let _ = fs::remove_file(log.rotated(n));
        }
        let _ = fs::remove_file(log.file());
        let mut w = RotatingWriter::open(log.clone()).unwrap();
        let mut from = 0;
        for &to in cuts.iter().chain([input.len()].iter()) {
            w.write(&input[from..to]).unwrap();
            from = to;
        }
        w.finish().unwrap();
        files(log)
    }

    fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(bytes)
    }

    const MAX: u64 = 16;

    /// Lines of 1 to `MAX` bytes (newline included), then a partial line.
    fn sample() -> Vec<u8> {
        let mut s = Vec::new();
        for (i, n) in [3usize, 1, 7, 16, 5, 15, 2, 9, 8, 16, 1, 11, 6, 6, 4]
            .into_iter()
            .enumerate()
        {
            s.extend((0..n - 1).map(|k| b'a' + ((i + k) % 26) as u8));
            s.push(b'\n');
        }
        s.extend_from_slice(b"tail");
        s
    }

    #[test]
    fn a_line_is_never_split_wherever_the_reads_cut_it() {
        let d = dir("cuts");
        let log = LogFile::new(d.join("out.log")).max_bytes(MAX).keep(64);
        let input = sample();
        let whole = run(&log, &input, &[]);
        assert!(whole.len() > 4, "the sample rotates several times");
        assert_eq!(
            whole.concat(),
            input,
            "with keep large enough, nothing is lost"
        );
        for (k, f) in whole.iter().enumerate() {
            assert!(f.len() as u64 <= MAX, "file {k} too big: {:?}", text(f));
            // Each file starts at a line start (the one before ended with a newline) and
            // ends with one; only the newest may end in the stream's partial last line.
            assert!(
                k == whole.len() - 1 || f.ends_with(b"\n"),
                "file {k} ends mid-line: {:?}",
                text(f)
            );
        }
        for pair in whole.windows(2) {
            let first = pair[1]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(pair[1].len(), |k| k + 1);
            assert!(
                (pair[0].len() + first) as u64 > MAX,
                "rotated although {:?} fitted after {:?}",
                text(&pair[1][..first]),
                text(&pair[0])
            );
        }
        for cut in 0..=input.len() {
            assert_eq!(run(&log, &input, &[cut]), whole, "one cut at {cut}");
        }
        for a in 0..=input.len() {
            let b = (a + 5).min(input.len());
            assert_eq!(run(&log, &input, &[a, b]), whole, "cuts at {a} and {b}");
        }
        let bytewise: Vec<usize> = (1..input.len()).collect();
        assert_eq!(run(&log, &input, &bytewise), whole, "one byte per read");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn rotation_drops_whole_files_and_leaves_a_tail_of_whole_lines() {
        let d = dir("drop");
        let log = LogFile::new(d.join("out.log")).max_bytes(MAX).keep(2);
        let input = sample();
        let whole = run(&log, &input, &[]);
        assert_eq!(whole.len(), 3, "the file and two rotated ones");
        let kept = whole.concat();
        assert!(kept.len() < input.len() && input.ends_with(&kept));
        let dropped = &input[..input.len() - kept.len()];
        assert!(
            dropped.ends_with(b"\n"),
            "what was dropped ends at a line end"
        );
        for cut in 0..=input.len() {
            assert_eq!(run(&log, &input, &[cut]), whole, "one cut at {cut}");
        }
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let d = dir("keep");
        let log = LogFile::new(d.join("out.log")).max_bytes(10).keep(2);
        let mut w = RotatingWriter::open(log.clone()).unwrap();
        for chunk in ["aaaaaa\n", "bbbbbb\n", "cccccc\n", "dddddd\n"] {
            w.write(chunk.as_bytes()).unwrap();
        }
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(read(log.path().to_owned()), "dddddd\n");
        assert_eq!(read(log.rotated(1)), "cccccc\n");
        assert_eq!(read(log.rotated(2)), "bbbbbb\n");
        assert!(!log.rotated(3).exists(), "only two rotated files are kept");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn keep_zero_truncates_and_appends_to_an_existing_file() {
        let d = dir("trunc");
        let log = LogFile::new(d.join("out.log")).max_bytes(8).keep(0);
        fs::write(log.path(), "old\n").unwrap();
        let mut w = RotatingWriter::open(log.clone()).unwrap();
        w.write(b"new\n").unwrap();
        assert_eq!(fs::read_to_string(log.path()).unwrap(), "old\nnew\n");
        w.write(b"more\n").unwrap();
        assert_eq!(fs::read_to_string(log.path()).unwrap(), "more\n");
        assert!(!log.rotated(1).exists());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_line_longer_than_max_bytes_starts_a_fresh_file_and_is_split_at_the_limit() {
        let d = dir("long");
        let log = LogFile::new(d.join("out.log")).max_bytes(8).keep(3);
        let input = b"ab\ncd\n0123456789\nef\n";
        let expected: Vec<Vec<u8>> = [&b"ab\ncd\n"[..], b"01234567", b"89\nef\n"]
            .map(<[u8]>::to_vec)
            .into();
        for cut in 0..=input.len() {
            assert_eq!(run(&log, input, &[cut]), expected, "one cut at {cut}");
        }
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_stream_without_newlines_goes_out_with_bounded_memory() {
        let d = dir("endless");
        // The default 10 MiB limit: the 64 KiB bound is what keeps the memory down here.
        let log = LogFile::new(d.join("out.log"));
        let mut w = RotatingWriter::open(log.clone()).unwrap();
        let chunk = [b'#'; 1000];
        for n in 1..=1000u64 {
            w.write(&chunk).unwrap();
            assert!(w.held.capacity() <= HOLD_MAX, "{} held", w.held.capacity());
            assert_eq!(w.len + w.held.len() as u64, n * 1000, "nothing lost");
        }
        w.write(b"\nnext\n").unwrap();
        w.finish().unwrap();
        let f = fs::read(log.path()).unwrap();
        assert_eq!(f.len(), 1_000_000 + 6);
        assert!(f.ends_with(b"#\nnext\n"));
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_replica_log_is_named_from_the_group_log() {
        let log = LogFile::new("/var/log/worker.log").max_bytes(100).keep(7);
        let r = log.for_replica(0);
        assert_eq!(r.file(), Path::new("/var/log/worker.0.log"));
        assert_eq!(r.rotated(2), Path::new("/var/log/worker.0.log.2"));
        assert_eq!((r.max_bytes, r.keep), (100, 7));
        assert_eq!(r.for_replica(3).file(), Path::new("/var/log/worker.3.log"));
        assert_eq!(
            LogFile::new("worker").for_replica(1).file(),
            Path::new("worker.1")
        );
        assert_eq!(
            LogFile::new("a.tar.gz").for_replica(2).file(),
            Path::new("a.tar.2.gz")
        );
        assert_eq!(Output::Null.for_replica(1), Output::Null);
        assert_eq!(Output::Inherit.for_replica(1), Output::Inherit);
        assert_eq!(
            Output::File(log).for_replica(4),
            Output::File(r.for_replica(4))
        );
    }
}
