#pragma once
// A 5x7 bitmap font for printable ASCII, enough for the axis labels and captions of our plots
// without a font library. Glyphs drawn for this project (in the style of the classic 5x7 LCD
// character sets); font5x7.cpp holds them as pictures.
#include <array>
#include <cstdint>

namespace deeptrain::report {

constexpr int kGlyphWidth = 5, kGlyphHeight = 7;
constexpr int kGlyphAdvance = 6;  // one column of space between characters

// Row r (0 = top) of character c; bit 4 is the leftmost column. Characters outside printable
// ASCII draw as '?'.
using Glyph = std::array<uint8_t, kGlyphHeight>;
const Glyph& glyph(char c);

}  // namespace deeptrain::report
