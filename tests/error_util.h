#pragma once
// Assertions on error messages, shared by the tests of code that throws.
#include <string>

#include <gtest/gtest.h>

#include "core/error.h"

// The message of the exception (of type E) that f throws, or "(no error)".
template <class E = deeptrain::InputError, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(no error)";
}

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "missing \"" << (part) << "\" in: " << (text)
