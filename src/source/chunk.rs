//! A document split into chunks by tokens, counted as the budget counts them (tiktoken `cl100k_base`, see
//! [`crate::tokens`]). A chunk holds at most `size` tokens and shares about `overlap` tokens with the one
//! before. It ends at the strongest boundary the window offers — before a Markdown heading, then between
//! paragraphs, then between sentences, then between words — in its second half, so that chunks are neither
//! cut mid-thought nor left tiny; a run of text with no boundary at all is cut between characters, never inside
//! one. A heading is never left at the end of a chunk: it stays with the section it opens.
//!
//! The chunks cover the document in order: the first starts at 0, the last ends at its end, and each starts
//! after the one before it and no later than where that one ends.

use std::ops::Range;

use crate::tokens;

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Byte range in the document (on character boundaries).
    pub bytes: Range<usize>,
    /// Character (Unicode scalar value) offsets in the document: `start..end`.
    pub chars: Range<usize>,
    /// Its tokens, counted on its own text.
    pub tokens: u64,
}

/// How strongly a position separates what comes before from what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Strength {
    Word = 1,
    Sentence = 2,
    Paragraph = 3,
    Heading = 4,
}

/// Where a chunk may start or end, and how good a place it is.
#[derive(Debug, Clone, Copy)]
struct Boundary {
    at: usize,
    strength: Strength,
}

/// The smallest chunk size allowed (the job file's bound): any one character fits.
pub const MIN_SIZE: u64 = crate::job::MIN_CHUNK_TOKENS;

/// Splits `text` into chunks of at most `size` tokens sharing up to `overlap` tokens with the chunk before.
/// `size` is at least [`MIN_SIZE`] and `overlap` below half of it (the job file's checks ensure both).
pub fn split(text: &str, size: u64, overlap: u64) -> Vec<Chunk> {
    debug_assert!(size >= MIN_SIZE && overlap < size / 2);
    if text.is_empty() {
        return Vec::new();
    }
    let doc = Doc::new(text);
    let mut chunks = Vec::new();
    let mut chars = CharCursor::default();
    let mut start = 0;
    let mut last_end = 0;
    loop {
        let (end, tokens) = doc.end_of_chunk(start, last_end, size);
        chunks.push(Chunk {
            bytes: start..end,
            chars: chars.at(text, start)..chars.at(text, end),
            tokens,
        });
        if end == text.len() {
            return chunks;
        }
        last_end = end;
        start = doc.start_of_next(start, end, overlap);
    }
}

/// A document with its boundaries and where each of its tokens starts.
struct Doc<'a> {
    text: &'a str,
    boundaries: Vec<Boundary>,
    token_starts: Vec<usize>,
}

impl<'a> Doc<'a> {
    fn new(text: &'a str) -> Doc<'a> {
        Doc {
            text,
            boundaries: boundaries(text),
            token_starts: tokens::starts(text),
        }
    }

    /// Tokens starting in `a..b`: close to the count of `text[a..b]` on its own, never far.
    fn tokens_between(&self, a: usize, b: usize) -> u64 {
        let before = |p: usize| self.token_starts.partition_point(|&s| s < p);
        (before(b) - before(a)) as u64
    }

    /// Where the chunk that starts at `start` ends: the document's end if the rest fits; else the strongest
    /// boundary after `after` (the previous chunk's end) whose text fits, preferring one in the window's second
    /// half and then the latest; else the last character that fits. Returns the end and the chunk's tokens.
    fn end_of_chunk(&self, start: usize, after: usize, size: u64) -> (usize, u64) {
        let len = self.text.len();
        if self.tokens_between(start, len) <= size {
            let n = tokens::estimate(&self.text[start..]);
            if n <= size {
                return (len, n);
            }
        }
        let first = self
            .boundaries
            .partition_point(|b| b.at <= after.max(start));
        let mut limit = len;
        loop {
            let window: Vec<Boundary> = self.boundaries[first..]
                .iter()
                .take_while(|b| b.at < limit && self.tokens_between(start, b.at) <= size)
                .copied()
                .collect();
            let Some(end) = best(&window, |b| self.tokens_between(start, b.at) >= size / 2) else {
                return self.cut_between_characters(start, after, size);
            };
            let n = tokens::estimate(&self.text[start..end]);
            if n <= size {
                return (end, n);
            }
            // The estimate was a token short: try the boundaries before this one.
            limit = end;
        }
    }

    /// The end of a chunk from `start` where no boundary fits: the last character boundary whose text fits,
    /// and at least one character past `after`.
    fn cut_between_characters(&self, start: usize, after: usize, size: u64) -> (usize, u64) {
        let text = self.text;
        let least = text.ceil_char_boundary(start.max(after) + 1);
        let first_token = self.token_starts.partition_point(|&s| s < start);
        let mut target = size as usize;
        loop {
            let at = self
                .token_starts
                .get(first_token + target)
                .copied()
                .unwrap_or(text.len());
            let end = text.floor_char_boundary(at).max(least).min(text.len());
            let n = tokens::estimate(&text[start..end]);
            if end == least || n <= size {
                return (end, n);
            }
            target -= 1;
        }
    }

    /// Where the chunk after `start..end` starts: the earliest boundary inside it whose text to `end` holds at
    /// most `overlap` tokens, or `end` when there is none (or no overlap).
    fn start_of_next(&self, start: usize, end: usize, overlap: u64) -> usize {
        if overlap == 0 {
            return end;
        }
        let first = self.boundaries.partition_point(|b| b.at <= start);
        self.boundaries[first..]
            .iter()
            .take_while(|b| b.at < end)
            .find(|b| {
                self.tokens_between(b.at, end) <= overlap
                    && tokens::estimate(&self.text[b.at..end]) <= overlap
            })
            .map_or(end, |b| b.at)
    }
}

/// The strongest boundary of `window`, the latest among equals, preferring those `preferred` says.
fn best(window: &[Boundary], preferred: impl Fn(&Boundary) -> bool) -> Option<usize> {
    let pick = |only_preferred: bool| {
        window
            .iter()
            .filter(|b| !only_preferred || preferred(b))
            .max_by_key(|b| (b.strength, b.at))
            .map(|b| b.at)
    };
    pick(true).or_else(|| pick(false))
}

/// Every position where a chunk may start or end, in order: the start of a word, of a sentence, of a
/// paragraph, of a Markdown heading. None inside a heading's line or between it and the first line of its
/// section: a heading stays with what it opens.
fn boundaries(text: &str) -> Vec<Boundary> {
    let mut out = Vec::new();
    let mut blank_before = false;
    let mut after_heading = false;
    let mut sentence_end = false;
    let mut line_at = 0;
    for line in text.split_inclusive('\n') {
        let start = line_at;
        line_at += line.len();
        let content = line.trim_start();
        if content.is_empty() {
            blank_before = true;
            continue;
        }
        let first = start + (line.len() - content.len());
        let heading = is_heading(content);
        let strength = match (heading, after_heading) {
            (_, true) => None,
            (true, false) => Some(Strength::Heading),
            (false, false) if blank_before => Some(Strength::Paragraph),
            (false, false) if sentence_end => Some(Strength::Sentence),
            (false, false) => Some(Strength::Word),
        };
        if let Some(strength) = strength {
            push(&mut out, first, strength);
        }
        let mut previous = ' ';
        for (i, c) in content.char_indices() {
            if !heading && i > 0 && previous.is_whitespace() && !c.is_whitespace() {
                let strength = if sentence_end {
                    Strength::Sentence
                } else {
                    Strength::Word
                };
                push(&mut out, first + i, strength);
            }
            if !c.is_whitespace() {
                sentence_end = matches!(c, '.' | '!' | '?')
                    || sentence_end && matches!(c, '"' | '\'' | ')' | ']' | '”' | '’');
            }
            previous = c;
        }
        blank_before = false;
        after_heading = heading;
    }
    out
}

/// Adds a boundary, keeping only the strongest at one position.
fn push(out: &mut Vec<Boundary>, at: usize, strength: Strength) {
    if at == 0 {
        return;
    }
    match out.last_mut() {
        Some(last) if last.at == at => last.strength = last.strength.max(strength),
        _ => out.push(Boundary { at, strength }),
    }
}

/// Whether `line` opens with a Markdown ATX heading: one to six `#` and a space (or the line's end).
fn is_heading(line: &str) -> bool {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    (1..=6).contains(&hashes)
        && matches!(
            line.as_bytes().get(hashes),
            None | Some(b' ' | b'\t' | b'\n' | b'\r')
        )
}

/// Character offsets of byte positions, found by walking from the last position asked (positions come in
/// nearly increasing order, so a document is walked about once).
#[derive(Debug, Default)]
struct CharCursor {
    byte: usize,
    char: usize,
}

impl CharCursor {
    fn at(&mut self, text: &str, byte: usize) -> usize {
        if byte >= self.byte {
            self.char += text[self.byte..byte].chars().count();
        } else {
            self.char -= text[byte..self.byte].chars().count();
        }
        self.byte = byte;
        self.char
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(text: &'a str, chunks: &[Chunk]) -> Vec<&'a str> {
        chunks.iter().map(|c| &text[c.bytes.clone()]).collect()
    }

    #[test]
    fn a_short_document_is_one_chunk() {
        let text = "One short paragraph.";
        let chunks = split(text, 64, 8);
        assert_eq!(
            chunks,
            vec![Chunk {
                bytes: 0..text.len(),
                chars: 0..20,
                tokens: tokens::estimate(text),
            }]
        );
        assert!(split("", 64, 8).is_empty());
    }

    #[test]
    fn paragraphs_are_preferred_to_sentences_and_sentences_to_words() {
        let para =
            |n: usize| format!("Sentence {n} of a paragraph here. Another one follows it now. ");
        let text = format!(
            "{}\n\n{}\n\n{}",
            para(1).repeat(3),
            para(2).repeat(3),
            para(3).repeat(3)
        );
        let chunks = split(&text, 60, 0);
        for t in &texts(&text, &chunks)[..chunks.len() - 1] {
            assert!(t.ends_with("\n\n") || t.ends_with(". "), "{t:?}");
        }
        assert!(
            texts(&text, &chunks)[0].ends_with("\n\n"),
            "{:?}",
            texts(&text, &chunks)
        );
    }

    #[test]
    fn a_heading_stays_with_its_section() {
        let body = "Words in the section body go on for a while here. ".repeat(4);
        let text = format!("# Title\n\n{body}\n\n## Second\n\n{body}\n\n## Third\n{body}");
        let chunks = split(&text, 64, 10);
        for t in texts(&text, &chunks) {
            let last_line = t.trim_end().lines().last().unwrap_or("");
            assert!(!is_heading(last_line), "a chunk ends with a heading: {t:?}");
        }
        // Each section fits a chunk: chunks end where the next section begins.
        for heading in ["## Second", "## Third"] {
            assert!(
                chunks
                    .iter()
                    .any(|c| text[c.bytes.end..].starts_with(heading)),
                "no chunk ends before {heading}: {:#?}",
                texts(&text, &chunks)
            );
        }
    }

    #[test]
    fn consecutive_chunks_share_about_the_overlap() {
        let text =
            "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima ".repeat(60);
        let chunks = split(&text, 64, 16);
        assert!(chunks.len() > 5);
        for pair in chunks.windows(2) {
            let shared = tokens::estimate(&text[pair[1].bytes.start..pair[0].bytes.end]);
            // Words here are one or two tokens: the overlap falls short by less than a word.
            assert!((14..=16).contains(&shared), "{shared} tokens shared");
        }
    }

    #[test]
    fn text_without_spaces_is_cut_between_characters() {
        let text = "é".repeat(3000) + "漢字" + &"x".repeat(500);
        let chunks = split(&text, 32, 0);
        assert!(chunks.len() > 10);
        for c in &chunks {
            assert!(c.tokens <= 32, "{c:?}");
        }
        assert_eq!(chunks.last().unwrap().bytes.end, text.len());
        assert_eq!(chunks.last().unwrap().chars.end, text.chars().count());
    }

    #[test]
    fn character_offsets_count_characters() {
        let text = "Ünïcödé wörds ärë hërë. ".repeat(40);
        let chunks = split(&text, 24, 6);
        for c in &chunks {
            assert_eq!(
                text.chars()
                    .skip(c.chars.start)
                    .take(c.chars.len())
                    .collect::<String>(),
                text[c.bytes.clone()]
            );
        }
    }

    /// Text made of the pieces chunking cares about: words of several scripts, sentence ends, line breaks,
    /// blank lines, Markdown headings, and runs with no space at all.
    fn document() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            6 => "[a-z]{1,9}".prop_map(|w| w + " "),
            2 => "[A-Z][a-z]{0,8}[.!?] ".prop_map(|s| s),
            1 => Just("\n".to_string()),
            1 => Just("\n\n".to_string()),
            1 => "#{1,3} [A-Za-z ]{1,20}\n".prop_map(|h| h),
            1 => "[\\PC]{1,40}".prop_map(|u| u),
            1 => "[éß漢字😀]{1,30}".prop_map(|u| u),
        ];
        proptest::collection::vec(piece, 0..400).prop_map(|v| v.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn chunks_cover_the_document_in_order_overlap_as_configured_and_none_is_over_the_size(
            text in document(),
            size in MIN_SIZE..200,
            overlap_share in 0u64..100,
        ) {
            let overlap = (size / 2).saturating_sub(1) * overlap_share / 100;
            let chunks = split(&text, size, overlap);
            if text.is_empty() {
                proptest::prop_assert!(chunks.is_empty());
                return Ok(());
            }
            proptest::prop_assert_eq!(chunks[0].bytes.start, 0);
            proptest::prop_assert_eq!(chunks.last().unwrap().bytes.end, text.len());
            let mut chars = 0;
            for (i, c) in chunks.iter().enumerate() {
                let t = &text[c.bytes.clone()];
                proptest::prop_assert!(!t.is_empty());
                proptest::prop_assert_eq!(c.tokens, tokens::estimate(t));
                proptest::prop_assert!(c.tokens <= size, "chunk {} has {} tokens: {:?}", i, c.tokens, t);
                // Character offsets name the same text.
                chars += text[..c.bytes.start].chars().count() - chars;
                proptest::prop_assert_eq!(c.chars.start, chars);
                proptest::prop_assert_eq!(c.chars.len(), t.chars().count());
                if let Some(next) = chunks.get(i + 1) {
                    proptest::prop_assert!(next.bytes.start > c.bytes.start);
                    proptest::prop_assert!(next.bytes.start <= c.bytes.end);
                    proptest::prop_assert!(next.bytes.end > c.bytes.end);
                    let shared = tokens::estimate(&text[next.bytes.start..c.bytes.end]);
                    proptest::prop_assert!(shared <= overlap, "{} tokens shared, overlap {}", shared, overlap);
                    if overlap == 0 {
                        proptest::prop_assert_eq!(next.bytes.start, c.bytes.end);
                    }
                }
            }
        }
    }
}
