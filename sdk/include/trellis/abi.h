/*
 * trellis plugin ABI — the only contract between the trellisd host and a plugin.
 *
 * Compatibility promise (see docs/plugin-abi.md):
 *   - A plugin built against ABI major M, minor m loads into a host of major M and
 *     minor >= m. Anything else is refused at load time with a message.
 *   - Structures only grow at the end. Every structure that may grow starts with
 *     `struct_size`; the reader uses min(struct_size, sizeof(its own view)) and
 *     treats fields past the writer's size as absent (zero/NULL). A structure
 *     larger than the reader knows is accepted only if the unknown tail is zero.
 *   - Adding a field or an op bumps the minor. Changing the meaning of anything
 *     bumps the major.
 *
 * Conventions used on every member:
 *   OWNERSHIP: borrowed  — valid for the duration of the call only; copy to keep.
 *   OWNERSHIP: static    — valid until the library is unloaded (plugin-owned data).
 *   OWNERSHIP: caller    — the caller allocated it and frees it; the callee writes.
 *   THREADING:           — which calls may run concurrently with which.
 *
 * Strings are NUL-terminated UTF-8. Addresses are in network byte order.
 * Nothing C++ crosses this boundary: no exceptions, no STL types, no RTTI.
 */
#ifndef TRELLIS_ABI_H_
#define TRELLIS_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TRELLIS_ABI_MAJOR 1
#define TRELLIS_ABI_MINOR 0

/* The single symbol a plugin exports. Its type is trellis_plugin_entry_fn. */
#define TRELLIS_PLUGIN_ENTRY_SYMBOL "trellis_plugin_entry_v1"

/* ---------------------------------------------------------------- status -- */

/* Status codes. A fixed-width integer, not an enum, so its size never varies. */
typedef int32_t trellis_status;
#define TRELLIS_OK 0
#define TRELLIS_E_INVALID 1        /* bad argument or config; do not retry as is  */
#define TRELLIS_E_NOT_FOUND 2      /* the object does not exist                   */
#define TRELLIS_E_EXISTS 3         /* the object exists already                   */
#define TRELLIS_E_EXHAUSTED 4      /* a pool or quota is used up                  */
#define TRELLIS_E_UNAVAILABLE 5    /* transient: retry later                      */
#define TRELLIS_E_PRECONDITION 6   /* state does not allow the operation          */
#define TRELLIS_E_INTERNAL 7       /* a bug or an unexpected failure              */
#define TRELLIS_E_UNIMPLEMENTED 8  /* the op is not provided                      */
#define TRELLIS_E_TIMEOUT 9        /* a deadline passed                           */
#define TRELLIS_E_MISMATCH 10      /* check: the state differs from what it should be */
#define TRELLIS_E_BUFFER 11        /* a caller-owned output buffer is too small   */

/*
 * Caller-owned error buffer passed to every fallible op.
 * OWNERSHIP: caller. The callee writes at most `capacity` bytes including the
 * terminating NUL into `message` and leaves it untouched on success. `message`
 * may be NULL when `capacity` is 0.
 */
typedef struct trellis_error {
  char* message;
  size_t capacity;
} trellis_error;

/*
 * A byte sink for variable-sized output (JSON documents, values).
 * OWNERSHIP: caller; `write` copies the bytes before it returns. The callee may
 * call `write` any number of times, only during the call it was passed to.
 */
typedef struct trellis_sink {
  void* ctx;
  void (*write)(void* ctx, const char* data, size_t len);
} trellis_sink;

/* ---------------------------------------------------------------- values -- */

typedef struct trellis_kv {
  const char* key;   /* OWNERSHIP: borrowed */
  const char* value; /* OWNERSHIP: borrowed */
} trellis_kv;

/*
 * One address of a pod, with what the datapath needs to plumb it.
 * Fixed size (it is used in arrays); growth only into `reserved`.
 */
typedef struct trellis_address {
  uint8_t family;     /* 4 or 6 */
  uint8_t prefix_len; /* prefix of the subnet the address belongs to */
  uint8_t flags;      /* TRELLIS_ADDR_F_* */
  uint8_t reserved0;
  uint32_t route_table; /* 0: main table; else the policy-routing table whose
                           rule `from <ip>` the host installs (ENI mode) */
  uint8_t ip[16];       /* network byte order; IPv4 uses the first 4 bytes */
  uint8_t gateway[16];  /* next hop inside the subnet; all-zero: none */
  char source_ref[64];  /* opaque to the host: who supplied the address
                           (e.g. "eni-123"); "" for local ranges */
  uint8_t reserved[32]; /* zero */
} trellis_address;

#define TRELLIS_ADDR_F_FROM_SOURCE 0x01 /* supplied by an address source */

/* A pod attachment: the unit the CNI runtime manages (container id + ifname). */
typedef struct trellis_pod_ref {
  const char* container_id; /* OWNERSHIP: borrowed */
  const char* ifname;       /* OWNERSHIP: borrowed */
} trellis_pod_ref;

/*
 * Everything the host knows of a pod attachment at the time of a call.
 * OWNERSHIP: borrowed for the duration of the call, every pointer included.
 * Strings are "" (never NULL) when unknown.
 */
typedef struct trellis_pod {
  uint32_t struct_size;
  uint32_t mtu;               /* of the pod interface */
  const char* container_id;
  const char* ifname;         /* inside the pod */
  const char* netns;          /* path; "" when the namespace is gone (DEL/GC) */
  const char* network_name;   /* CNI network name */
  const char* k8s_namespace;
  const char* k8s_name;
  const char* k8s_uid;
  const trellis_kv* labels;       /* pod labels */
  uint32_t n_labels;
  uint32_t n_annotations;
  const trellis_kv* annotations;  /* pod annotations */
  const char* runtime_config; /* the CNI runtimeConfig object as JSON ("{}") */
  const char* cni_args;       /* the CNI `args` object as JSON ("{}") */
  const char* host_ifname;    /* host end of the pod's veth; "" before datapath */
  int32_t host_ifindex;       /* 0 before datapath */
  uint32_t n_addresses;
  const trellis_address* addresses; /* assigned addresses; none before ipam */
  void* reserved[4];
} trellis_pod;

/* ----------------------------------------------------------- host API -- */

#define TRELLIS_LOG_TRACE 0
#define TRELLIS_LOG_DEBUG 1
#define TRELLIS_LOG_INFO 2
#define TRELLIS_LOG_WARN 3
#define TRELLIS_LOG_ERROR 4

#define TRELLIS_METRIC_COUNTER 1
#define TRELLIS_METRIC_GAUGE 2
#define TRELLIS_METRIC_HISTOGRAM 3

/* OWNERSHIP: borrowed; the host copies everything during metric_register. */
typedef struct trellis_metric_desc {
  uint32_t struct_size;
  int32_t type;                    /* TRELLIS_METRIC_* */
  const char* name;                /* full Prometheus name, e.g. trellis_qos_drops_total */
  const char* help;
  const char* const* label_names;  /* n_labels names */
  uint32_t n_labels;
  uint32_t n_buckets;
  const double* buckets;           /* histogram upper bounds, ascending */
} trellis_metric_desc;

/* Visitor for kv_scan. Return 0 to go on, non-zero to stop.
   OWNERSHIP: key and value are borrowed for the duration of the callback. */
typedef int32_t (*trellis_kv_visit_fn)(void* user, const char* key, const char* value,
                                       size_t value_len);

/*
 * What the host offers a module instance. Handed to create(); valid until
 * destroy() returns. OWNERSHIP: host.
 *
 * THREADING: every function may be called from any thread, concurrently, as
 * long as the instance exists — including from threads the plugin started.
 * No function calls back into the plugin while holding a lock the plugin could
 * need, except the address-source calls, which call the providing module.
 */
typedef struct trellis_host_api {
  uint32_t struct_size;
  uint16_t abi_major;
  uint16_t abi_minor;
  void* ctx;               /* pass back unchanged as the first argument */
  const char* module_name; /* OWNERSHIP: host, valid until destroy() */

  /* Logging. The host adds the module name. */
  void (*log)(void* ctx, int32_t level, const char* message);
  int32_t (*log_level)(void* ctx); /* the lowest level that is written */

  /*
   * Key/value store, persistent across restarts, private to this module.
   * Each call is atomic and durable when it returns OK.
   * kv_get: writes the value to `value`; TRELLIS_E_NOT_FOUND when absent.
   */
  trellis_status (*kv_get)(void* ctx, const char* key, trellis_sink* value, trellis_error* err);
  trellis_status (*kv_put)(void* ctx, const char* key, const char* value, size_t value_len,
                           trellis_error* err);
  trellis_status (*kv_delete)(void* ctx, const char* key, trellis_error* err);
  /* Visits keys starting with `prefix` in key order. */
  trellis_status (*kv_scan)(void* ctx, const char* prefix, trellis_kv_visit_fn visit, void* user,
                            trellis_error* err);

  /*
   * Metrics. Names must be unique within the host. The returned id is valid
   * until destroy(); the host removes the module's series then.
   * label_values: OWNERSHIP borrowed; exactly the registered number of labels.
   */
  trellis_status (*metric_register)(void* ctx, const trellis_metric_desc* desc, uint32_t* id,
                                    trellis_error* err);
  void (*metric_set)(void* ctx, uint32_t id, const char* const* label_values, double value);
  void (*metric_add)(void* ctx, uint32_t id, const char* const* label_values, double delta);
  void (*metric_observe)(void* ctx, uint32_t id, const char* const* label_values, double value);
  void (*metric_forget)(void* ctx, uint32_t id, const char* const* label_values);

  /*
   * Address-source service, provided by another module (e.g. eni).
   * TRELLIS_E_UNAVAILABLE when no enabled module provides it.
   * acquire: fills up to `capacity` entries of `out` (OWNERSHIP: caller).
   */
  trellis_status (*addresses_acquire)(void* ctx, const trellis_pod* pod, uint8_t family,
                                      uint32_t count, trellis_address* out, uint32_t capacity,
                                      uint32_t* n_out, trellis_error* err);
  trellis_status (*addresses_release)(void* ctx, const trellis_address* addresses, uint32_t count,
                                      trellis_error* err);

  /* Tells the host this module's health changed; the host then calls status().
     `reason` OWNERSHIP: borrowed. */
  void (*notify_health)(void* ctx, const char* reason);

  void* reserved[8];
} trellis_host_api;

/* ------------------------------------------------------- interfaces -- */
/*
 * Every ops table starts with struct_size and an interface version. Every op
 * receives the `instance` that create() returned. A NULL op is "not provided".
 *
 * THREADING (all pod-scoped ops): the host serialises calls for the same
 * (container_id, ifname) and may call concurrently for different pods. Ops
 * never run concurrently with reconfigure() or destroy() of the same instance.
 */

#define TRELLIS_IPAM_VERSION 1
typedef struct trellis_ipam_ops {
  uint32_t struct_size;
  uint32_t version; /* TRELLIS_IPAM_VERSION */
  /* Allocates this pod's addresses into `out` (OWNERSHIP: caller, `capacity`
     entries). Idempotent: a second call for the same pod returns the same
     addresses. TRELLIS_E_EXHAUSTED when no address is free. */
  trellis_status (*allocate)(void* instance, const trellis_pod* pod, trellis_address* out,
                             uint32_t capacity, uint32_t* n_out, trellis_error* err);
  /* Frees the pod's addresses. OK when the pod holds none. */
  trellis_status (*release)(void* instance, const trellis_pod* pod, trellis_error* err);
  /* TRELLIS_E_MISMATCH when `pod->addresses` are not what this module holds. */
  trellis_status (*check)(void* instance, const trellis_pod* pod, trellis_error* err);
  /* Releases every allocation whose attachment is not in `live`
     (OWNERSHIP: borrowed, n_live entries). */
  trellis_status (*gc)(void* instance, const trellis_pod_ref* live, uint32_t n_live,
                       trellis_error* err);
  /* Writes a JSON array of allocations: [{"container_id","ifname","ip",...}]. */
  trellis_status (*list)(void* instance, trellis_sink* json, trellis_error* err);
  void* reserved[4];
} trellis_ipam_ops;

#define TRELLIS_ADDRESS_SOURCE_VERSION 1
typedef struct trellis_address_source_ops {
  uint32_t struct_size;
  uint32_t version; /* TRELLIS_ADDRESS_SOURCE_VERSION */
  /* Hands out `count` addresses of `family` for `pod`, each with its gateway,
     route table and source_ref filled in. The source keeps ownership records;
     the caller returns them with release(). THREADING: concurrent calls. */
  trellis_status (*acquire)(void* instance, const trellis_pod* pod, uint8_t family, uint32_t count,
                            trellis_address* out, uint32_t capacity, uint32_t* n_out,
                            trellis_error* err);
  /* Takes addresses back. Unknown addresses are ignored. */
  trellis_status (*release)(void* instance, const trellis_address* addresses, uint32_t count,
                            trellis_error* err);
  void* reserved[4];
} trellis_address_source_ops;

#define TRELLIS_QOS_VERSION 1
typedef struct trellis_qos_ops {
  uint32_t struct_size;
  uint32_t version; /* TRELLIS_QOS_VERSION */
  /* Shapes the pod (pod->host_ifname is set). Also used to re-apply after a
     change of limits: must not disturb the pod's connections. */
  trellis_status (*apply)(void* instance, const trellis_pod* pod, trellis_error* err);
  /* Removes what apply() installed. OK when nothing is there. */
  trellis_status (*remove)(void* instance, const trellis_pod* pod, trellis_error* err);
  trellis_status (*check)(void* instance, const trellis_pod* pod, trellis_error* err);
  /* Removes shaping of every attachment not in `live`. */
  trellis_status (*gc)(void* instance, const trellis_pod_ref* live, uint32_t n_live,
                       trellis_error* err);
  void* reserved[4];
} trellis_qos_ops;

#define TRELLIS_POLICY_VERSION 1
typedef struct trellis_policy_ops {
  uint32_t struct_size;
  uint32_t version; /* TRELLIS_POLICY_VERSION */
  /* A pod appeared or its identity (labels, addresses) changed. On ADD this
     runs before the host returns the result: the pod must be enforced before
     its first packet. */
  trellis_status (*pod_upsert)(void* instance, const trellis_pod* pod, trellis_error* err);
  trellis_status (*pod_remove)(void* instance, const trellis_pod* pod, trellis_error* err);
  trellis_status (*check)(void* instance, const trellis_pod* pod, trellis_error* err);
  trellis_status (*gc)(void* instance, const trellis_pod_ref* live, uint32_t n_live,
                       trellis_error* err);
  /* Namespace labels from an external source (OWNERSHIP: borrowed). */
  trellis_status (*namespace_upsert)(void* instance, const char* name, const trellis_kv* labels,
                                     uint32_t n_labels, trellis_error* err);
  /* Policy objects from an external source: `key` identifies the object
     (e.g. "ns/name"); `manifest_json` a networking.k8s.io/v1 NetworkPolicy,
     or NULL to delete it. */
  trellis_status (*policy_upsert)(void* instance, const char* key, const char* manifest_json,
                                  trellis_error* err);
  /* Answers a JSON request {"from":..,"to":..,"port":..,"protocol":..} with a
     JSON verdict written to `out`. */
  trellis_status (*explain)(void* instance, const char* request_json, trellis_sink* out,
                            trellis_error* err);
  void* reserved[4];
} trellis_policy_ops;

#define TRELLIS_ENI_VERSION 1
typedef struct trellis_eni_ops {
  uint32_t struct_size;
  uint32_t version; /* TRELLIS_ENI_VERSION */
  /* JSON: ENIs, their IPs, owners, idle IPs, quota, last cloud errors. */
  trellis_status (*pool_status)(void* instance, trellis_sink* json, trellis_error* err);
  /* Brings the warm pool to its configured size now. */
  trellis_status (*ensure_pool)(void* instance, trellis_error* err);
  /* Deletes leaked ENIs / IPs (only ours) now. */
  trellis_status (*gc)(void* instance, trellis_error* err);
  void* reserved[4];
} trellis_eni_ops;

#define TRELLIS_SECGROUP_SYNC_DRY_RUN 0x1
#define TRELLIS_SECGROUP_VERSION 1
typedef struct trellis_secgroup_ops {
  uint32_t struct_size;
  uint32_t version; /* TRELLIS_SECGROUP_VERSION */
  /* Reconciles now (or only computes, with TRELLIS_SECGROUP_SYNC_DRY_RUN) and
     writes the diff as JSON to `diff`. */
  trellis_status (*reconcile)(void* instance, uint32_t flags, trellis_sink* diff,
                              trellis_error* err);
  /* Leadership granted (1) or lost (0) by the host's election. */
  trellis_status (*set_leader)(void* instance, int32_t leader, trellis_error* err);
  void* reserved[4];
} trellis_secgroup_ops;

/* ------------------------------------------------------- descriptor -- */

/*
 * What trellis_plugin_entry_v1() returns. OWNERSHIP: static (the descriptor and
 * everything it points to live until the library is unloaded).
 *
 * Lifecycle: validate (any number of times, no instance) → create → any ops and
 * reconfigure → destroy. destroy() must join every thread the plugin started;
 * the host unloads the library only after destroy() returned and no call is in
 * flight.
 */
typedef struct trellis_plugin_descriptor {
  uint32_t struct_size;
  uint16_t abi_major; /* TRELLIS_ABI_MAJOR the plugin was built with */
  uint16_t abi_minor; /* TRELLIS_ABI_MINOR the plugin was built with */
  const char* name;        /* e.g. "ipam" */
  const char* version;     /* the plugin's own version, e.g. "1.2.0" */
  const char* description;

  /* Checks a config (JSON object) without side effects.
     THREADING: may run concurrently with anything, including on no instance. */
  trellis_status (*validate)(const char* config_json, trellis_error* err);
  /* Creates an instance. `host` OWNERSHIP: host, valid until destroy() returns.
     On failure *instance is left NULL and nothing needs destroying. */
  trellis_status (*create)(const trellis_host_api* host, const char* config_json, void** instance,
                           trellis_error* err);
  /* Applies a new config that validate() accepted. On failure the instance
     keeps running with its previous config. */
  trellis_status (*reconfigure)(void* instance, const char* config_json, trellis_error* err);
  /* Writes a JSON object {"healthy":bool,"degraded":bool,"message":str,...}. */
  trellis_status (*status)(void* instance, trellis_sink* json, trellis_error* err);
  /* The module is being disabled through the node config: remove every
     node-level effect it owns (tables, pools, devices). The host has already
     called the per-pod remove ops for every pod. NOT called when the daemon
     merely stops or restarts: then every effect must stay in the kernel.
     May be NULL. destroy() follows. */
  trellis_status (*deactivate)(void* instance, trellis_error* err);
  /* Joins every thread the plugin started and frees the instance. Leaves the
     kernel and cloud state as they are. */
  void (*destroy)(void* instance);

  /* Interfaces provided, NULL where absent. OWNERSHIP: static. */
  const trellis_ipam_ops* ipam;
  const trellis_address_source_ops* address_source;
  const trellis_qos_ops* qos;
  const trellis_policy_ops* policy;
  const trellis_eni_ops* eni;
  const trellis_secgroup_ops* secgroup;

  void* reserved[8];
} trellis_plugin_descriptor;

typedef const trellis_plugin_descriptor* (*trellis_plugin_entry_fn)(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TRELLIS_ABI_H_ */
