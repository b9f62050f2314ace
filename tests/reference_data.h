#pragma once
// The book's reference archives (../shared/reference, or DEEPTRAIN_REFERENCE_DIR given to CMake).
// Tests that read them skip, naming the directory, where they are absent, instead of failing.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

inline bool have_reference_data() {
  return std::filesystem::exists(std::string(DEEPTRAIN_REFERENCE_DIR) + "/book_deep_convnet_params.npz");
}

#define SKIP_WITHOUT_REFERENCE_DATA()                                                          \
  do {                                                                                         \
    if (!have_reference_data())                                                                \
      GTEST_SKIP() << "no reference archives in " DEEPTRAIN_REFERENCE_DIR                      \
                      " (the book's weights and batches; configure with "                      \
                      "-DDEEPTRAIN_REFERENCE_DIR=DIR)";                                        \
  } while (0)
