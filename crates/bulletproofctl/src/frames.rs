//! Restore in time proportional to the file, not to its place in the archive (issue
//! 15, item 8).
//!
//! `bundle build` writes each `*.tar.zst` as a run of independent zstd frames, a new
//! frame starting at the first entry after every [`FRAME_BYTES`] of tar (so an entry's
//! header is never more than that into its frame, and a large file starts its own).
//! A multi-frame stream is an ordinary zstd stream: `zstd -d`, `tar --zstd` and older
//! bulletproofctl read it unchanged.
//!
//! While `update` extracts a verified archive it notes where each frame starts (in the
//! compressed file and in the tar stream) and where each entry's header is: the
//! *restore index*, written beside the release (`install/releases/<ver>/restore-index.json`,
//! root's). The guard's restore seeks to the entry's frame, decodes from there, skips
//! to the header and reads one entry. The index is a hint, not trust: what it points
//! at must be the entry it names, and the bytes are checked against the signed
//! manifest as before; without an index (an archive built as one frame, an older
//! release), or when it does not match, the restore streams from the start as it
//! always did.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::rc::Rc;

/// Tar bytes per frame before the next entry starts a new one.
pub const FRAME_BYTES: u64 = 4 << 20;

/// The file name of a release's restore index.
pub const INDEX_FILE: &str = "restore-index.json";

/// A zstd writer that ends the current frame and starts a new one when asked to at an
/// entry boundary ([`FrameWriter::entry_boundary`]) after [`FRAME_BYTES`].
pub struct FrameWriter<W: Write> {
    encoder: Option<zstd::stream::write::Encoder<'static, W>>,
    level: i32,
    in_frame: u64,
    /// The frame is full and an entry ended: the next write starts a new frame (so
    /// the stream never ends with an empty one).
    cut: bool,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(writer: W, level: i32) -> io::Result<Self> {
        Ok(Self {
            encoder: Some(zstd::stream::write::Encoder::new(writer, level)?),
            level,
            in_frame: 0,
            cut: false,
        })
    }

    /// Called between two tar entries: the next entry starts a new frame when this
    /// one is full.
    pub fn entry_boundary(&mut self) {
        self.cut = self.in_frame >= FRAME_BYTES;
    }

    /// Ends the last frame; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.encoder.take().expect("present").finish()
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cut && !buf.is_empty() {
            let writer = self.encoder.take().expect("present").finish()?;
            self.encoder = Some(zstd::stream::write::Encoder::new(writer, self.level)?);
            self.in_frame = 0;
            self.cut = false;
        }
        let n = self.encoder.as_mut().expect("present").write(buf)?;
        self.in_frame += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.encoder.as_mut().expect("present").flush()
    }
}

/// One frame: where it starts in the compressed file and in the decompressed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub compressed: u64,
    pub decompressed: u64,
}

/// Counts the bytes read from the file.
struct Counting<R> {
    inner: R,
    read: Rc<RefCell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.read.borrow_mut() += n as u64;
        Ok(n)
    }
}

type FrameDecoder<R> = zstd::stream::read::Decoder<'static, BufReader<Counting<R>>>;

/// A zstd reader that decodes frame by frame and records where each frame starts.
pub struct FrameReader<R: Read> {
    decoder: Option<FrameDecoder<R>>,
    read: Rc<RefCell<u64>>,
    decompressed: u64,
    frames: Rc<RefCell<Vec<Frame>>>,
}

impl<R: Read> FrameReader<R> {
    /// Returns the reader and a handle on the frames it has seen so far.
    #[allow(clippy::type_complexity)]
    pub fn new(inner: R) -> io::Result<(Self, Rc<RefCell<Vec<Frame>>>)> {
        let read = Rc::new(RefCell::new(0));
        let buffered = BufReader::with_capacity(
            zstd::stream::read::Decoder::<BufReader<R>>::recommended_output_size().max(1 << 17),
            Counting {
                inner,
                read: Rc::clone(&read),
            },
        );
        let frames = Rc::new(RefCell::new(vec![Frame {
            compressed: 0,
            decompressed: 0,
        }]));
        let decoder = zstd::stream::read::Decoder::with_buffer(buffered)?.single_frame();
        Ok((
            Self {
                decoder: Some(decoder),
                read,
                decompressed: 0,
                frames: Rc::clone(&frames),
            },
            frames,
        ))
    }
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let n = decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.decompressed += n as u64;
                return Ok(n);
            }
            // The frame ended: is another one next?
            let mut rest = self.decoder.take().expect("present").finish();
            if rest.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let compressed = *self.read.borrow() - rest.buffer().len() as u64;
            self.frames.borrow_mut().push(Frame {
                compressed,
                decompressed: self.decompressed,
            });
            self.decoder = Some(zstd::stream::read::Decoder::with_buffer(rest)?.single_frame());
        }
    }
}

/// The restore index of one archive: its frames and, per manifest path, the offset of
/// the entry's tar header in the decompressed stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ArchiveIndex {
    pub frames: Vec<Frame>,
    pub entries: BTreeMap<String, u64>,
}

impl ArchiveIndex {
    /// Where to start decoding for the entry whose header is at `header`: the
    /// compressed offset of its frame and how many decompressed bytes to skip.
    pub fn locate(&self, header: u64) -> Option<(u64, u64)> {
        let at = self.frames.partition_point(|f| f.decompressed <= header);
        let frame = self.frames.get(at.checked_sub(1)?)?;
        Some((frame.compressed, header - frame.decompressed))
    }
}

/// The restore index of a release: one [`ArchiveIndex`] per archive (`core`, `modules`).
pub type ReleaseIndex = BTreeMap<String, ArchiveIndex>;

/// Reads a release's restore index; `None` when absent or unreadable (the restore then
/// streams). Only a root-owned file that only root can write is used.
pub fn load_index(release: &Path) -> Option<ReleaseIndex> {
    let bytes = crate::layout::read_trusted(&release.join(INDEX_FILE)).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Opens `archive` positioned at the tar header of the entry the index places at
/// `header`: the rest of the stream from there (frames are independent).
pub fn open_at(archive: std::fs::File, index: &ArchiveIndex, header: u64) -> io::Result<impl Read> {
    let (offset, skip) = index
        .locate(header)
        .ok_or_else(|| io::Error::other("no frame for the entry"))?;
    let mut archive = archive;
    archive.seek(SeekFrom::Start(offset))?;
    let mut decoder = zstd::stream::read::Decoder::new(archive)?;
    let skipped = io::copy(&mut (&mut decoder).take(skip), &mut io::sink())?;
    if skipped != skip {
        return Err(io::Error::other("the index points past the archive's end"));
    }
    Ok(decoder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_recorded_and_an_entry_is_found_from_its_frame() {
        let mut writer = FrameWriter::new(Vec::new(), 3).unwrap();
        let mut offsets = Vec::new();
        let mut total = 0u64;
        for i in 0..40u64 {
            offsets.push(total);
            let chunk = vec![i as u8; 1 << 20];
            writer.write_all(&chunk).unwrap();
            total += chunk.len() as u64;
            writer.entry_boundary();
        }
        let compressed = writer.finish().unwrap();
        // An ordinary zstd stream as a whole.
        assert_eq!(
            zstd::decode_all(&compressed[..]).unwrap().len() as u64,
            total
        );

        let (mut reader, frames) = FrameReader::new(&compressed[..]).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out.len() as u64, total);
        let frames = frames.borrow().clone();
        assert_eq!(frames.len(), 10, "{frames:?}");
        let index = ArchiveIndex {
            frames,
            entries: BTreeMap::new(),
        };
        let file = tempfile::tempfile().unwrap();
        (&file).write_all(&compressed).unwrap();
        for (i, &offset) in offsets.iter().enumerate() {
            let mut rest = open_at(file.try_clone().unwrap(), &index, offset).unwrap();
            let mut first = [0u8; 16];
            rest.read_exact(&mut first).unwrap();
            assert_eq!(first, [i as u8; 16]);
        }
    }
}
