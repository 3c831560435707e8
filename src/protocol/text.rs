//! Which characters a message shown to the user may hold (the binding message, BC-UC-03): the
//! user compares it on two screens, so nothing in it may be invisible, reorder the text around
//! it, or render differently from what it is. Decided by the Unicode Character Database (ICU4X's
//! tables, which `url` already brings), not by a hand-made list.

use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory, GeneralCategoryGroup};
use icu_properties::{CodePointMapData, CodePointSetData};

/// Control (Cc), format (Cf: bidi controls, zero-width characters, tags), surrogate (Cs),
/// private-use (Co) and unassigned (Cn) code points, and the line and paragraph separators
/// (Zl, Zp).
const HIDDEN: GeneralCategoryGroup = GeneralCategoryGroup::Control
    .union(GeneralCategoryGroup::Format)
    .union(GeneralCategoryGroup::Surrogate)
    .union(GeneralCategoryGroup::PrivateUse)
    .union(GeneralCategoryGroup::Unassigned)
    .union(GeneralCategoryGroup::LineSeparator)
    .union(GeneralCategoryGroup::ParagraphSeparator);

/// Whether `c` is shown as itself: not Cc, Cf, Cs, Co, Cn, Zl or Zp, and not a default-ignorable
/// code point (which also covers fillers such as U+3164 and the variation selectors).
pub fn shows_as_itself(c: char) -> bool {
    !HIDDEN.contains(CodePointMapData::<GeneralCategory>::new().get(c))
        && !CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Hostile traffic, item 3: each of these let two different messages look the same.
    #[test]
    fn invisible_and_reordering_characters_are_refused() {
        for c in [
            '\u{0}',
            '\t',
            '\u{7F}',
            '\u{85}',
            '\u{AD}',
            '\u{61C}',
            '\u{180E}',
            '\u{200B}',
            '\u{200D}',
            '\u{200E}',
            '\u{202E}',
            '\u{2028}',
            '\u{2029}',
            '\u{2066}',
            '\u{3164}',
            '\u{FE0F}',
            '\u{FEFF}',
            '\u{FFA0}',
            '\u{E000}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E007F}',
            '\u{E0100}',
            '\u{10FFFF}',
            '\u{FFFF}',
            '\u{0378}',
        ] {
            assert!(!shows_as_itself(c), "U+{:04X} must be refused", c as u32);
        }
        for c in "Pay €12.50 to Ана — 注文 #4711 ✓ 😀 שלום مرحبا".chars() {
            assert!(shows_as_itself(c), "U+{:04X} must be shown", c as u32);
        }
    }

    #[test]
    fn no_code_point_of_a_hidden_category_is_shown() {
        let gc = CodePointMapData::<GeneralCategory>::new();
        let mut shown = 0u32;
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            if shows_as_itself(c) {
                shown += 1;
                assert!(!HIDDEN.contains(gc.get(c)), "U+{:04X}", c as u32);
            }
        }
        // Unicode 16 assigns ~155 000 visible characters; the tables are in use, not empty.
        assert!((100_000..200_000).contains(&shown), "{shown}");
    }

    proptest! {
        // One hidden character anywhere in an otherwise fine message refuses it.
        #[test]
        fn one_hidden_character_anywhere_is_enough(
            text in "[a-zA-Z0-9 àéü€中]{0,30}",
            at in 0usize..31,
            hidden in prop::sample::select(vec!['\u{61C}', '\u{AD}', '\u{200B}', '\u{202E}', '\u{2028}', '\u{E0041}', '\u{3164}', '\u{1}']),
        ) {
            let mut chars: Vec<char> = text.chars().collect();
            chars.insert(at.min(chars.len()), hidden);
            prop_assert!(!chars.iter().all(|c| shows_as_itself(*c)));
            prop_assert!(text.chars().all(shows_as_itself));
        }
    }
}
