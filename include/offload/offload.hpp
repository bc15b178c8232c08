// offload: everything. One header per concept sits beside this one.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/call.hpp>
#include <offload/call_observer.hpp>
#include <offload/call_options.hpp>
#include <offload/call_stats.hpp>
#include <offload/concurrent_future.hpp>
#include <offload/config.hpp>
#include <offload/context.hpp>
#include <offload/errors.hpp>
#include <offload/event_loop.hpp>
#include <offload/future.hpp>
#include <offload/gather.hpp>
#include <offload/limiter.hpp>
#include <offload/loop_thread.hpp>
#include <offload/map.hpp>
#include <offload/node_cache.hpp>
#include <offload/outcome.hpp>
#include <offload/serial_thread.hpp>
#include <offload/sleep.hpp>
#include <offload/thread_pool.hpp>
#include <offload/threadsafe.hpp>
#include <offload/timeout.hpp>
#include <offload/to_thread.hpp>
