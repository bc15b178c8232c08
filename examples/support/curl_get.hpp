// A blocking HTTP GET through libcurl's easy API, for offload's examples. It is an ordinary
// blocking function, as written without any event loop: from a coroutine, run it with
// offload::to_thread (examples/to_thread_curl.cpp shows the same code step by step).
//
// Call curl_global_init() once (curl_global below) before any thread uses it.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <curl/curl.h>

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>

namespace offload_examples {

struct http_response {
  long status = 0;
  std::string body;
};

/// What http_get throws when curl itself fails (no connection, timeout, ...).
class curl_error : public std::runtime_error {
 public:
  curl_error(CURLcode c, const char* what) : std::runtime_error(what), code(c) {}
  CURLcode code;
};

/// Blocks until the whole response is in; throws curl_error if there is none.
inline http_response http_get(const std::string& url) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) throw curl_error(CURLE_FAILED_INIT, "curl_easy_init failed");
  http_response response;
  curl_write_callback append = [](char* data, std::size_t size, std::size_t n, void* out) {
    static_cast<std::string*>(out)->append(data, size * n);
    return size * n;
  };
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, append);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);  // needed when threads use curl
  curl_easy_setopt(curl.get(), CURLOPT_NOPROXY, "*");  // a local server: ignore http_proxy
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, 10'000L);
  const CURLcode rc = curl_easy_perform(curl.get());
  if (rc != CURLE_OK) throw curl_error(rc, curl_easy_strerror(rc));
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

/// curl_global_init / curl_global_cleanup for main(): construct it before any thread uses curl.
struct curl_global {
  curl_global() {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw std::runtime_error("curl_global_init failed");
    }
  }
  ~curl_global() { curl_global_cleanup(); }
  curl_global(const curl_global&) = delete;
  curl_global& operator=(const curl_global&) = delete;
};

}  // namespace offload_examples
