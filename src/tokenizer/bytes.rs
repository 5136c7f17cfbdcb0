//! The GPT-2 byte ↔ character mapping of byte-level BPE vocabularies (FORMATS.md §4.4): printable
//! bytes keep their code point, the 68 others map to U+0100.. in byte order.

const fn kept(b: u32) -> bool {
    (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE
}

/// Code point of each byte's character.
const CHAR_OF: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut next = 0x100;
    let mut b = 0;
    while b < 256 {
        if kept(b) {
            t[b as usize] = b;
        } else {
            t[b as usize] = next;
            next += 1;
        }
        b += 1;
    }
    t
};

/// One past the largest alphabet code point (U+0100 + 68).
const ALPHABET_END: usize = 0x144;

/// Byte of each alphabet code point, -1 outside the alphabet.
const BYTE_OF: [i16; ALPHABET_END] = {
    let mut t = [-1i16; ALPHABET_END];
    let mut b = 0;
    while b < 256 {
        t[CHAR_OF[b] as usize] = b as i16;
        b += 1;
    }
    t
};

/// The character that stands for `byte` in a byte-level vocabulary.
pub fn byte_to_char(byte: u8) -> char {
    char::from_u32(CHAR_OF[byte as usize]).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The byte a byte-level character stands for, or `None` for a character outside the alphabet.
pub fn char_to_byte(c: char) -> Option<u8> {
    match BYTE_OF.get(c as usize) {
        Some(&b) if b >= 0 => Some(b as u8),
        _ => None,
    }
}

/// Whether every character of `s` is in the 256-character byte alphabet.
pub fn is_byte_level(s: &str) -> bool {
    s.chars().all(|c| char_to_byte(c).is_some())
}

/// `s` with each UTF-8 byte replaced by its alphabet character.
pub fn to_byte_level(s: &str) -> String {
    s.bytes().map(byte_to_char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_matches_the_published_table() {
        assert_eq!(byte_to_char(0x00), '\u{100}');
        assert_eq!(byte_to_char(b'\n'), '\u{10A}');
        assert_eq!(byte_to_char(b' '), '\u{120}');
        assert_eq!(byte_to_char(0x7F), '\u{121}');
        assert_eq!(byte_to_char(0xAD), '\u{143}');
        assert_eq!(byte_to_char(b'A'), 'A');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(to_byte_level("a b\n"), "a\u{120}b\u{10A}");
        assert!(is_byte_level("\u{120}the") && !is_byte_level("a b"));
    }
}
