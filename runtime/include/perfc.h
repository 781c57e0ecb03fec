/*
 * perfc.h — umbrella header: include this and get every perfc module.
 */
#ifndef PERFC_H
#define PERFC_H

#include "perfc/access_log.h"
#include "perfc/arena.h"
#include "perfc/auth.h"
#include "perfc/bloom.h"
#include "perfc/breaker.h"
#include "perfc/cache.h"
#include "perfc/cache_rpc.h"
#include "perfc/client.h"
#include "perfc/common.h"
#include "perfc/config.h"
#include "perfc/config_data.h"
#include "perfc/grpc_metrics.h"
#include "perfc/health.h"
#include "perfc/interceptor.h"
#include "perfc/jwt.h"
#include "perfc/l1cache.h"
#include "perfc/log.h"
#include "perfc/metrics.h"
#include "perfc/metrics_http.h"
#include "perfc/pg.h"
#include "perfc/pool.h"
#include "perfc/process_metrics.h"
#include "perfc/ratelimit.h"
#include "perfc/redis.h"
#include "perfc/reflection.h"
#include "perfc/server.h"
#include "perfc/service.h"
#include "perfc/shedding.h"
#include "perfc/status.h"
#include "perfc/stream.h"
#include "perfc/timeouts.h"
#include "perfc/tls.h"
#include "perfc/trace_context.h"
#include "perfc/tracing.h"

#endif /* PERFC_H */
