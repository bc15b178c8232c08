// offload: naming threads and reading names back.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <string>

#if defined(__linux__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace offload::detail {

inline void set_current_thread_name(const std::string& name) noexcept {
#if defined(__linux__)
  // Linux keeps 15 characters; keep the tail, which holds the worker's number.
  const std::string shown = name.size() > 15 ? name.substr(name.size() - 15) : name;
  pthread_setname_np(pthread_self(), shown.c_str());
#elif defined(__APPLE__)
  pthread_setname_np(name.c_str());
#else
  (void)name;
#endif
}

inline std::string current_thread_name() {
#if defined(__linux__) || defined(__APPLE__)
  char buf[64] = {};
  if (pthread_getname_np(pthread_self(), buf, sizeof(buf)) == 0) return buf;
#endif
  return {};
}

}  // namespace offload::detail
