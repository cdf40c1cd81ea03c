//! Finding the end of a chunked body while its bytes stream through unchanged.
//!
//! The proxy forwards chunked bodies verbatim (no re-encoding, no buffering of the whole body);
//! it only needs to know where the message ends, so the next message on a kept-alive connection
//! starts at the right byte, and to refuse bodies that are not valid chunked coding.

/// Longest chunk-size line accepted (size, extensions and CRLF).
const MAX_SIZE_LINE: usize = 1024;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 8 * 1024;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Not a hex digit where a chunk size was expected.
    BadSize,
    /// Chunk size does not fit in 64 bits.
    SizeOverflow,
    /// Missing CRLF after a size line or after chunk data.
    BadLineEnding,
    /// Size line or trailers too long.
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { digits: u32 },
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// Streaming scanner of one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    size: u64,
    remaining: u64,
    line: usize,
    trailers: usize,
}

impl Default for ChunkedScanner {
    fn default() -> ChunkedScanner {
        ChunkedScanner {
            state: State::Size { digits: 0 },
            size: 0,
            remaining: 0,
            line: 0,
            trailers: 0,
        }
    }
}

impl ChunkedScanner {
    /// Whether the final chunk and trailers have been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans `input`; returns `Some(n)` when the body ends after the first `n` bytes of it.
    pub fn feed(&mut self, input: &[u8]) -> Result<Option<usize>, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => {
                    self.count_line()?;
                    match hex(b) {
                        Some(d) => {
                            if self.size > (u64::MAX >> 4) {
                                return Err(ChunkError::SizeOverflow);
                            }
                            self.size = (self.size << 4) | u64::from(d);
                            self.state = State::Size { digits: digits + 1 };
                        }
                        None if digits == 0 => return Err(ChunkError::BadSize),
                        None => match b {
                            b';' | b' ' | b'\t' => self.state = State::Extension,
                            b'\r' => self.state = State::SizeLf,
                            b'\n' => return Err(ChunkError::BadLineEnding),
                            _ => return Err(ChunkError::BadSize),
                        },
                    }
                }
                State::Extension => {
                    self.count_line()?;
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err(ChunkError::BadLineEnding),
                        _ => {}
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.line = 0;
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.remaining = self.size;
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let take = (input.len() - i)
                        .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    self.remaining -= take as u64;
                    i += take;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.size = 0;
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => {
                    self.count_trailer()?;
                    self.state = if b == b'\r' {
                        State::EndLf
                    } else {
                        State::TrailerLine
                    };
                }
                State::TrailerLine => {
                    self.count_trailer()?;
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    }
                }
                State::TrailerLf => {
                    self.count_trailer()?;
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::Done;
                    return Ok(Some(i + 1));
                }
                State::Done => return Ok(Some(i)),
            }
            i += 1;
        }
        // Reaching Done returned above; only an empty input after the end gets here done.
        Ok(self.is_done().then_some(0))
    }

    fn count_line(&mut self) -> Result<(), ChunkError> {
        self.line += 1;
        if self.line > MAX_SIZE_LINE {
            return Err(ChunkError::TooLong);
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkError::TooLong);
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";

    #[test]
    fn finds_the_end_in_one_piece() {
        let mut s = ChunkedScanner::default();
        let end = s.feed(BODY).unwrap().unwrap();
        assert_eq!(&BODY[end..], b"NEXT");
        assert!(s.is_done());
    }

    #[test]
    fn finds_the_end_byte_by_byte() {
        let mut s = ChunkedScanner::default();
        let mut consumed = 0;
        for (i, b) in BODY.iter().enumerate() {
            if let Some(n) = s.feed(std::slice::from_ref(b)).unwrap() {
                assert_eq!(n, 1);
                consumed = i + 1;
                break;
            }
        }
        assert_eq!(&BODY[consumed..], b"NEXT");
    }

    #[test]
    fn every_split_point_gives_the_same_end() {
        for split in 0..BODY.len() {
            let mut s = ChunkedScanner::default();
            let (a, b) = BODY.split_at(split);
            let end = match s.feed(a).unwrap() {
                Some(n) => n,
                None => split + s.feed(b).unwrap().expect("ends in the second part"),
            };
            assert_eq!(&BODY[end..], b"NEXT", "split at {split}");
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let bad: [(&[u8], ChunkError); 6] = [
            (b"x\r\n", ChunkError::BadSize),
            (b"\r\n", ChunkError::BadSize),
            (b"4\r\nWikiX\r\n", ChunkError::BadLineEnding),
            (b"4\n", ChunkError::BadLineEnding),
            (b"ffffffffffffffffff\r\n", ChunkError::SizeOverflow),
            (b"0\r\nX: y\rZ", ChunkError::BadLineEnding),
        ];
        for (input, want) in bad {
            assert_eq!(
                ChunkedScanner::default().feed(input),
                Err(want),
                "{input:?}"
            );
        }
        let long = [b'1'; 1]
            .iter()
            .chain(std::iter::repeat_n(&b';', 2000))
            .copied()
            .collect::<Vec<u8>>();
        assert_eq!(
            ChunkedScanner::default().feed(&long),
            Err(ChunkError::TooLong)
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Chunked-encodes `chunks` with an optional extension and trailer.
    fn encode(chunks: &[Vec<u8>], ext: bool, trailer: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:X}", c.len()).as_bytes());
            if ext {
                out.extend_from_slice(b";name=value");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        if trailer {
            out.extend_from_slice(b"X-Checksum: abc\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #[test]
        fn the_end_is_found_whatever_the_split(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            ext in any::<bool>(),
            trailer in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let body = encode(&chunks, ext, trailer);
            let mut stream = body.clone();
            stream.extend_from_slice(b"GET /next");
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len())).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let mut s = ChunkedScanner::default();
            let mut end = None;
            for w in points.windows(2) {
                if let Some(n) = s.feed(&stream[w[0]..w[1]]).unwrap() {
                    end = Some(w[0] + n);
                    break;
                }
            }
            prop_assert_eq!(end, Some(body.len()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = ChunkedScanner::default().feed(&bytes);
            let mut h = [httparse::EMPTY_HEADER; 16];
            let _ = crate::h1::parse_request(&bytes, &mut h, crate::h1::Limits::default());
            let mut h = [httparse::EMPTY_HEADER; 16];
            let _ = crate::h1::parse_response(&bytes, &mut h, crate::h1::Limits::default(), false);
        }
    }
}
