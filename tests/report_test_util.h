#pragma once
// Small helpers of the tests of report/ and the CLI's outputs (test_tensorboard_files,
// test_progress_metrics, test_plots, test_cli_output).
#include <png.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <regex>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace report_test {

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

inline std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string l; std::getline(ss, l);) out.push_back(l);
  return out;
}

inline size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + what.size())) ++n;
  return n;
}

struct DecodedPng {
  uint32_t width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

// Checks the signature and IHDR by hand, then decodes with libpng.
inline DecodedPng decode_png(const std::string& bytes) {
  DecodedPng d;
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(bytes.substr(12, 4), "IHDR");
  auto be32 = [&](size_t at) {
    return uint32_t(uint8_t(bytes[at])) << 24 | uint32_t(uint8_t(bytes[at + 1])) << 16 |
           uint32_t(uint8_t(bytes[at + 2])) << 8 | uint32_t(uint8_t(bytes[at + 3]));
  };
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) {
    ADD_FAILURE() << "libpng: " << image.message;
    return d;
  }
  image.format = PNG_FORMAT_RGB;
  d.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, d.rgb.data(), 0, nullptr)) {
    ADD_FAILURE() << "libpng: " << image.message;
    return d;
  }
  d.width = image.width;
  d.height = image.height;
  EXPECT_EQ(be32(16), d.width);
  EXPECT_EQ(be32(20), d.height);
  return d;
}

// Well-formed XML, checked simply: tags nest and close, attribute quotes pair, '&' starts an
// entity. Returns the start tags in order.
inline std::vector<std::string> check_xml(const std::string& xml) {
  std::vector<std::string> open, tags;
  size_t at = 0;
  while ((at = xml.find('<', at)) != std::string::npos) {
    const size_t end = xml.find('>', at);
    if (end == std::string::npos) {
      ADD_FAILURE() << "unterminated tag at " << at;
      break;
    }
    const std::string tag = xml.substr(at + 1, end - at - 1);
    EXPECT_EQ(count(tag, "\"") % 2, 0u) << tag;
    if (tag[0] == '?') {
    } else if (tag[0] == '/') {
      EXPECT_FALSE(open.empty()) << tag;
      if (!open.empty()) {
        EXPECT_EQ(open.back(), tag.substr(1)) << "mismatched close";
        open.pop_back();
      }
    } else {
      const std::string name = tag.substr(0, tag.find_first_of(" /"));
      tags.push_back(tag);
      if (tag.back() != '/') open.push_back(name);
    }
    at = end + 1;
  }
  EXPECT_TRUE(open.empty()) << "unclosed <" << (open.empty() ? "" : open.back()) << ">";
  for (size_t a = xml.find('&'); a != std::string::npos; a = xml.find('&', a + 1))
    EXPECT_TRUE(std::regex_search(xml.substr(a, 6), std::regex("^&(lt|gt|amp|quot|apos);")))
        << xml.substr(a, 10);
  return tags;
}

}  // namespace report_test
