// Captures what the process writes to stderr, for tests that check a report's text.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <cstdio>
#include <string>

#if defined(__linux__)
#include <unistd.h>
#endif

namespace offload_test {

#if defined(__linux__)
/// Redirects the process's stderr (fd 2) into a temporary file while alive; `text()` reads
/// what was written so far.
class stderr_capture {
 public:
  stderr_capture() {
    std::fflush(stderr);
    file_ = std::tmpfile();
    saved_ = ::dup(2);
    if (file_ != nullptr && saved_ >= 0) ::dup2(::fileno(file_), 2);
  }
  stderr_capture(const stderr_capture&) = delete;
  stderr_capture& operator=(const stderr_capture&) = delete;
  ~stderr_capture() {
    restore();
    if (file_ != nullptr) std::fclose(file_);
  }
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  std::string text() {
    std::fflush(stderr);
    std::string out;
    if (file_ == nullptr) return out;
    std::rewind(file_);
    char buf[512];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), file_)) > 0) out.append(buf, n);
    return out;
  }

 private:
  std::FILE* file_ = nullptr;
  int saved_ = -1;
};
#endif

}  // namespace offload_test
