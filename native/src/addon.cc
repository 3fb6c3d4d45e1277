// Module entry of nodemesh_native: turns JS arguments into C++ values (re-checking only what
// it casts; src/redirect/ validates the rest) and exposes each native capability.
#include <fcntl.h>
#include <napi.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bpf_links.h"
#include "bpf_maps.h"
#include "bpf_object_owner.h"
#include "bpf_object_wrap.h"
#include "bpffs.h"
#include "libbpf_log.h"
#include "native_error.h"
#include "netns_thread.h"
#include "pod_routing.h"
#include "prog_test_run.h"
#include "promise_worker.h"
#include "ring_events.h"
#include "sockets.h"
#include "splice.h"
#include "unique_fd.h"

namespace nodemesh {
namespace {

struct AddonData {
  Napi::FunctionReference bpf_object_ctor;
};

// ---- argument helpers -----------------------------------------------------------------

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsString())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

int64_t IntegerArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max) {
  if (i >= info.Length() || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v != static_cast<double>(static_cast<int64_t>(v)) || v < static_cast<double>(min) ||
      v > static_cast<double>(max))
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer in [" +
                                                std::to_string(min) + ", " + std::to_string(max) + "]");
  return static_cast<int64_t>(v);
}

int FdArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return static_cast<int>(IntegerArg(info, i, name, 0, INT32_MAX));
}

std::vector<uint8_t> BytesOf(Napi::Env env, Napi::Value v, const char* name) {
  if (!v.IsBuffer()) throw Napi::TypeError::New(env, std::string(name) + " must be a Buffer");
  auto buf = v.As<Napi::Buffer<uint8_t>>();
  return std::vector<uint8_t>(buf.Data(), buf.Data() + buf.Length());
}

std::vector<uint8_t> BufferArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer");
  return BytesOf(info.Env(), info[i], name);
}

Napi::Buffer<uint8_t> ToBuffer(Napi::Env env, const std::vector<uint8_t>& bytes) {
  return Napi::Buffer<uint8_t>::Copy(env, bytes.data(), bytes.size());
}

// Runs f on the JS thread, turning a NativeError into a JS system-style error.
template <typename F>
Napi::Value Guard(Napi::Env env, F f) {
  try {
    return f();
  } catch (const NativeError& e) {
    throw e.ToJs(env);
  }
}

// A private copy of a program fd for a worker, so closing the object meanwhile is harmless.
std::shared_ptr<UniqueFd> DupFd(Napi::Env env, int fd) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) throw NativeError::FromErrno("fcntl", "F_DUPFD_CLOEXEC").ToJs(env);
  return std::make_shared<UniqueFd>(copy);
}

// ---- bpffs --------------------------------------------------------------------------------

Napi::Value IsBpffs(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "path");
  return Guard(info.Env(), [&] { return Napi::Boolean::New(info.Env(), Bpffs::IsBpffs(path)); });
}

Napi::Value MountBpffs(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "path");
  return Guard(info.Env(), [&] {
    Bpffs::Mount(path);
    return info.Env().Undefined();
  });
}

Napi::Value UnmountBpffs(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "path");
  return Guard(info.Env(), [&] {
    Bpffs::Unmount(path);
    return info.Env().Undefined();
  });
}

// ---- objects ------------------------------------------------------------------------------

// loadObject(path, pinRoot, rodata: { [global]: Buffer }) -> Promise<BpfObject>
Napi::Value LoadObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "path");
  std::string pin_root = StringArg(info, 1, "pinRoot");
  BpfObjectOwner::Rodata rodata;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (!info[2].IsObject()) throw Napi::TypeError::New(env, "rodata must be an object of Buffers");
    Napi::Object obj = info[2].As<Napi::Object>();
    Napi::Array names = obj.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).As<Napi::String>().Utf8Value();
      rodata.emplace_back(name, BytesOf(env, obj.Get(name), "rodata value"));
    }
  }
  auto loaded = std::make_shared<std::unique_ptr<BpfObjectOwner>>();
  return PromiseWorker::Start(
      env, "nodemesh.loadObject",
      [=] { *loaded = BpfObjectOwner::OpenAndLoad(path, pin_root, rodata); },
      [=](Napi::Env env) -> Napi::Value {
        auto* data = env.GetInstanceData<AddonData>();
        return BpfObjectWrap::NewInstance(env, data->bpf_object_ctor, std::move(*loaded));
      });
}

// ---- links --------------------------------------------------------------------------------

// linkCreate(progFd, targetPath, attachType, pinPath) -> Promise<void>
Napi::Value LinkCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto prog = DupFd(env, FdArg(info, 0, "progFd"));
  std::string target = StringArg(info, 1, "targetPath");
  int attach_type = static_cast<int>(IntegerArg(info, 2, "attachType", 0, 1024));
  std::string pin = StringArg(info, 3, "pinPath");
  return PromiseWorker::Start(
      env, "nodemesh.linkCreate", [=] { BpfLinks::CreateAndPin(prog->get(), target, attach_type, pin); },
      [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
}

// linkUpdate(pinPath, progFd) -> Promise<void>
Napi::Value LinkUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string pin = StringArg(info, 0, "pinPath");
  auto prog = DupFd(env, FdArg(info, 1, "progFd"));
  return PromiseWorker::Start(
      env, "nodemesh.linkUpdate", [=] { BpfLinks::Update(pin, prog->get()); },
      [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
}

// linkDetach(pinPath) -> Promise<void>
Napi::Value LinkDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string pin = StringArg(info, 0, "pinPath");
  return PromiseWorker::Start(
      env, "nodemesh.linkDetach", [=] { BpfLinks::DetachAndUnpin(pin); },
      [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
}

// linkInfo(pinPath) -> { id, type, progId, attachType, cgroupId: bigint, netnsIno } | null
Napi::Value LinkInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string pin = StringArg(info, 0, "pinPath");
  return Guard(env, [&]() -> Napi::Value {
    auto d = BpfLinks::Describe(pin);
    if (!d) return env.Null();
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", d->id);
    o.Set("type", d->type);
    o.Set("progId", d->prog_id);
    o.Set("attachType", d->attach_type);
    o.Set("cgroupId", Napi::BigInt::New(env, static_cast<uint64_t>(d->cgroup_id)));
    o.Set("netnsIno", d->netns_ino);
    return o;
  });
}

// ---- maps ---------------------------------------------------------------------------------

Napi::Value MapShapeOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapFd");
  return Guard(env, [&]() -> Napi::Value {
    MapShape s = BpfMaps::Shape(fd);
    Napi::Object o = Napi::Object::New(env);
    o.Set("type", s.type);
    o.Set("keySize", s.key_size);
    o.Set("valueSize", s.value_size);
    o.Set("maxEntries", s.max_entries);
    return o;
  });
}

Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapFd");
  auto key = BufferArg(info, 1, "key");
  auto value = BufferArg(info, 2, "value");
  auto flags = static_cast<uint64_t>(IntegerArg(info, 3, "flags", 0, 7));
  return Guard(env, [&] {
    BpfMaps::Update(fd, key, value, flags);
    return env.Undefined();
  });
}

Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapFd");
  auto key = BufferArg(info, 1, "key");
  return Guard(env, [&]() -> Napi::Value {
    auto value = BpfMaps::Lookup(fd, key);
    if (!value) return env.Null();
    return ToBuffer(env, *value);
  });
}

Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapFd");
  auto key = BufferArg(info, 1, "key");
  return Guard(env, [&] { return Napi::Boolean::New(env, BpfMaps::Delete(fd, key)); });
}

Napi::Value MapNextKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapFd");
  std::optional<std::vector<uint8_t>> key;
  if (info.Length() > 1 && !info[1].IsNull() && !info[1].IsUndefined()) key = BufferArg(info, 1, "key");
  return Guard(env, [&]() -> Napi::Value {
    auto next = BpfMaps::NextKey(fd, key);
    if (!next) return env.Null();
    return ToBuffer(env, *next);
  });
}

Napi::Value SockmapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapFd");
  auto key = BufferArg(info, 1, "key");
  int sock = FdArg(info, 2, "sockFd");
  auto flags = static_cast<uint64_t>(IntegerArg(info, 3, "flags", 0, 7));
  return Guard(env, [&] {
    BpfMaps::UpdateSocket(fd, key, sock, flags);
    return env.Undefined();
  });
}

// originalDst(origDstMapFd, sockFd) -> { ip, port } | null
Napi::Value OriginalDstOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int map = FdArg(info, 0, "mapFd");
  int sock = FdArg(info, 1, "sockFd");
  return Guard(env, [&]() -> Napi::Value {
    auto dst = BpfMaps::LookupOriginalDst(map, sock);
    if (!dst) return env.Null();
    Napi::Object o = Napi::Object::New(env);
    o.Set("ip", Sockets::FormatIPv4(dst->ip));
    o.Set("port", dst->port);
    return o;
  });
}

// ---- sockets ------------------------------------------------------------------------------

// listenInNetns(netnsPath, host, port, backlog, reusePort) -> Promise<fd>
Napi::Value ListenInNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns = StringArg(info, 0, "netnsPath");
  ListenSpec spec;
  spec.host = StringArg(info, 1, "host");
  spec.port = static_cast<int>(IntegerArg(info, 2, "port", 0, 65535));
  spec.backlog = static_cast<int>(IntegerArg(info, 3, "backlog", 0, INT32_MAX));
  spec.reuse_port = info.Length() > 4 && info[4].ToBoolean().Value();
  auto fd = std::make_shared<int>(-1);
  return PromiseWorker::Start(
      env, "nodemesh.listenInNetns",
      [=] { *fd = NetnsThread::Run(netns, [&] { return Sockets::Listen(spec); }); },
      [=](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *fd); });
}

// socketInNetns(netnsPath, bindIp | null, family 4|6) -> Promise<fd>
Napi::Value SocketInNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns = StringArg(info, 0, "netnsPath");
  std::optional<std::string> bind_ip;
  if (info.Length() > 1 && info[1].IsString()) bind_ip = info[1].As<Napi::String>().Utf8Value();
  int family = info.Length() > 2 ? static_cast<int>(IntegerArg(info, 2, "family", 4, 6)) : 4;
  auto fd = std::make_shared<int>(-1);
  return PromiseWorker::Start(
      env, "nodemesh.socketInNetns",
      [=] { *fd = NetnsThread::Run(netns, [&] { return Sockets::Unconnected(bind_ip, family); }); },
      [=](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *fd); });
}

// socketsInNetns(netnsPath, bindIp | null, family 4|6, count, transparentMark | null)
//   -> Promise<fd[]>: one thread and one setns pair for the whole batch, which is what
// dominates the cost of one socket. With a mark, the sockets are delivery sockets
// (Sockets::Transparent) and bindIp must be null.
Napi::Value SocketsInNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns = StringArg(info, 0, "netnsPath");
  std::optional<std::string> bind_ip;
  if (info.Length() > 1 && info[1].IsString()) bind_ip = info[1].As<Napi::String>().Utf8Value();
  int family = static_cast<int>(IntegerArg(info, 2, "family", 4, 6));
  int count = static_cast<int>(IntegerArg(info, 3, "count", 1, 1024));
  std::optional<uint32_t> mark;
  if (info.Length() > 4 && !info[4].IsNull() && !info[4].IsUndefined())
    mark = static_cast<uint32_t>(IntegerArg(info, 4, "transparentMark", 1, UINT32_MAX));
  if (mark && (bind_ip || family != 4))
    throw Napi::TypeError::New(env, "delivery sockets are IPv4 and bound at connect time: bindIp must be null and family 4");
  auto fds = std::make_shared<std::vector<int>>();
  return PromiseWorker::Start(
      env, "nodemesh.socketsInNetns",
      [=] {
        *fds = NetnsThread::Run(netns, [&] {
          std::vector<int> out;
          out.reserve(count);
          try {
            for (int i = 0; i < count; i++) out.push_back(mark ? Sockets::Transparent(*mark) : Sockets::Unconnected(bind_ip, family));
          } catch (...) {
            for (int fd : out) ::close(fd);
            throw;
          }
          return out;
        });
      },
      [=](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, fds->size());
        for (size_t i = 0; i < fds->size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, (*fds)[i]));
        return a;
      });
}

// ---- in-pod routing for inbound delivery --------------------------------------------------

DeliveryRouting RoutingArgs(const Napi::CallbackInfo& info, size_t first) {
  DeliveryRouting r;
  r.mark = static_cast<uint32_t>(IntegerArg(info, first, "mark", 1, UINT32_MAX));
  r.mask = static_cast<uint32_t>(IntegerArg(info, first + 1, "mask", 1, UINT32_MAX));
  r.table = static_cast<uint32_t>(IntegerArg(info, first + 2, "table", 1, UINT32_MAX));
  r.priority = static_cast<uint32_t>(IntegerArg(info, first + 3, "priority", 1, 32765));
  return r;
}

// installDeliveryRouting(netnsPath, mark, mask, table, priority)
//   -> Promise<{ ruleAdded, previousFwmarkAccept, previousFwmarkReflect }>
Napi::Value InstallDeliveryRouting(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns = StringArg(info, 0, "netnsPath");
  DeliveryRouting r = RoutingArgs(info, 1);
  auto out = std::make_shared<RoutingInstalled>();
  return PromiseWorker::Start(
      env, "nodemesh.installDeliveryRouting", [=] { *out = NetnsThread::Run(netns, [&] { return PodRouting::Install(r); }); },
      [=](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("ruleAdded", out->rule_added);
        o.Set("previousFwmarkAccept", out->prev_fwmark_accept);
        o.Set("previousFwmarkReflect", out->prev_fwmark_reflect);
        return o;
      });
}

// removeDeliveryRouting(netnsPath, mark, mask, table, priority, fwmarkAccept, fwmarkReflect)
//   -> Promise<{ ruleRemoved, routeRemoved }>; a sysctl value of -1 leaves it alone.
Napi::Value RemoveDeliveryRouting(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns = StringArg(info, 0, "netnsPath");
  DeliveryRouting r = RoutingArgs(info, 1);
  int accept = static_cast<int>(IntegerArg(info, 5, "fwmarkAccept", -1, 1));
  int reflect = static_cast<int>(IntegerArg(info, 6, "fwmarkReflect", -1, 1));
  auto out = std::make_shared<RoutingRemoved>();
  return PromiseWorker::Start(
      env, "nodemesh.removeDeliveryRouting",
      [=] { *out = NetnsThread::Run(netns, [&] { return PodRouting::Remove(r, accept, reflect); }); },
      [=](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("ruleRemoved", out->rule_removed);
        o.Set("routeRemoved", out->route_removed);
        return o;
      });
}

Napi::Value NetnsCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "fd");
  return Guard(env, [&] { return Napi::BigInt::New(env, Sockets::NetnsCookie(fd)); });
}

Napi::Value SocketCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "fd");
  return Guard(env, [&] { return Napi::BigInt::New(env, Sockets::SocketCookie(fd)); });
}

// ---- the kernel splice (splice.cc) --------------------------------------------------------

uint64_t CookieArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  bool lossless = false;
  if (i >= info.Length() || !info[i].IsBigInt())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a bigint");
  uint64_t v = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throw Napi::RangeError::New(info.Env(), std::string(name) + " must fit in 64 bits");
  return v;
}

SpliceMaps SpliceMapsArg(const Napi::CallbackInfo& info) {
  return SpliceMaps{FdArg(info, 0, "sockhashFd"), FdArg(info, 1, "peerFd"), FdArg(info, 2, "takenFd")};
}

// spliceAttach(progFd, sockhashFd)
Napi::Value SpliceAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int prog = FdArg(info, 0, "progFd");
  int map = FdArg(info, 1, "sockhashFd");
  return Guard(env, [&] {
    Splice::Attach(prog, map);
    return env.Undefined();
  });
}

// splicePair(sockhashFd, peerFd, takenFd, fdA, fdB) -> [cookieA, cookieB]
Napi::Value SplicePair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SpliceMaps maps = SpliceMapsArg(info);
  int a = FdArg(info, 3, "fdA");
  int b = FdArg(info, 4, "fdB");
  return Guard(env, [&]() -> Napi::Value {
    SplicedPair p = Splice::Pair(maps, a, b);
    Napi::Array out = Napi::Array::New(env, 2);
    out.Set(0u, Napi::BigInt::New(env, p.cookie_a));
    out.Set(1u, Napi::BigInt::New(env, p.cookie_b));
    return out;
  });
}

// spliceRelease(sockhashFd, peerFd, takenFd, cookieA, cookieB)
Napi::Value SpliceRelease(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SpliceMaps maps = SpliceMapsArg(info);
  uint64_t a = CookieArg(info, 3, "cookieA");
  uint64_t b = CookieArg(info, 4, "cookieB");
  Splice::Release(maps, a, b);
  return env.Undefined();
}

// spliceTaken(sockhashFd, peerFd, takenFd, cookie, total)
Napi::Value SpliceTaken(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SpliceMaps maps = SpliceMapsArg(info);
  uint64_t cookie = CookieArg(info, 3, "cookie");
  auto total = static_cast<uint64_t>(IntegerArg(info, 4, "total", 0, INT64_MAX));
  return Guard(env, [&] {
    Splice::Taken(maps, cookie, total);
    return env.Undefined();
  });
}

// tcpStats(fd) -> [bytesReceived, bytesAcked, outq, lastDataRecvMs, lastDataSentMs]
Napi::Value TcpStatsOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "fd");
  return Guard(env, [&]() -> Napi::Value {
    TcpStats s = Splice::Stats(fd);
    Napi::Array out = Napi::Array::New(env, 5);
    out.Set(0u, static_cast<double>(s.bytes_received));
    out.Set(1u, static_cast<double>(s.bytes_acked));
    out.Set(2u, s.outq);
    out.Set(3u, s.last_data_recv_ms);
    out.Set(4u, s.last_data_sent_ms);
    return out;
  });
}

// netnsCookieOfPath(netnsPath) -> Promise<bigint>: a throwaway socket made in that netns.
Napi::Value NetnsCookieOfPath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns = StringArg(info, 0, "netnsPath");
  auto cookie = std::make_shared<uint64_t>(0);
  return PromiseWorker::Start(
      env, "nodemesh.netnsCookieOfPath",
      [=] {
        UniqueFd sock(NetnsThread::Run(netns, [] {
          int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
          if (fd < 0) throw NativeError::FromErrno("socket");
          return fd;
        }));
        *cookie = Sockets::NetnsCookie(sock.get());
      },
      [=](Napi::Env env) -> Napi::Value { return Napi::BigInt::New(env, *cookie); });
}

// ---- BPF_PROG_RUN -------------------------------------------------------------------------

// progTestRun(progFd, { ctxIn?, ctxOutSize?, dataIn?, dataOutSize?, repeat? })
//   -> Promise<{ retval, durationNs, ctxOut: Buffer, dataOut: Buffer }>
Napi::Value ProgTestRunJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto prog = DupFd(env, FdArg(info, 0, "progFd"));
  TestRunInput in;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    if (o.Has("ctxIn") && !o.Get("ctxIn").IsUndefined()) in.ctx_in = BytesOf(env, o.Get("ctxIn"), "ctxIn");
    if (o.Has("dataIn") && !o.Get("dataIn").IsUndefined()) in.data_in = BytesOf(env, o.Get("dataIn"), "dataIn");
    if (o.Has("ctxOutSize")) in.ctx_out_size = o.Get("ctxOutSize").ToNumber().Uint32Value();
    if (o.Has("dataOutSize")) in.data_out_size = o.Get("dataOutSize").ToNumber().Uint32Value();
    if (o.Has("repeat")) in.repeat = o.Get("repeat").ToNumber().Uint32Value();
  }
  if (in.ctx_out_size > (1U << 16) || in.data_out_size > (1U << 24))
    throw Napi::RangeError::New(env, "ctxOutSize/dataOutSize too large");
  auto result = std::make_shared<TestRunResult>();
  return PromiseWorker::Start(
      env, "nodemesh.progTestRun", [=] { *result = ProgTestRun::Run(prog->get(), in); },
      [=](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("retval", result->retval);
        o.Set("durationNs", result->duration_ns);
        o.Set("ctxOut", ToBuffer(env, result->ctx_out));
        o.Set("dataOut", ToBuffer(env, result->data_out));
        return o;
      });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  LibbpfLog::Install();
  auto* data = new AddonData();
  data->bpf_object_ctor = Napi::Persistent(BpfObjectWrap::Define(env));
  env.SetInstanceData(data);

  exports.Set("isBpffs", Napi::Function::New(env, IsBpffs, "isBpffs"));
  exports.Set("mountBpffs", Napi::Function::New(env, MountBpffs, "mountBpffs"));
  exports.Set("unmountBpffs", Napi::Function::New(env, UnmountBpffs, "unmountBpffs"));
  exports.Set("loadObject", Napi::Function::New(env, LoadObject, "loadObject"));
  exports.Set("linkCreate", Napi::Function::New(env, LinkCreate, "linkCreate"));
  exports.Set("linkUpdate", Napi::Function::New(env, LinkUpdate, "linkUpdate"));
  exports.Set("linkDetach", Napi::Function::New(env, LinkDetach, "linkDetach"));
  exports.Set("linkInfo", Napi::Function::New(env, LinkInfo, "linkInfo"));
  exports.Set("mapShape", Napi::Function::New(env, MapShapeOf, "mapShape"));
  exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate, "mapUpdate"));
  exports.Set("mapLookup", Napi::Function::New(env, MapLookup, "mapLookup"));
  exports.Set("mapDelete", Napi::Function::New(env, MapDelete, "mapDelete"));
  exports.Set("mapNextKey", Napi::Function::New(env, MapNextKey, "mapNextKey"));
  exports.Set("sockmapUpdate", Napi::Function::New(env, SockmapUpdate, "sockmapUpdate"));
  exports.Set("originalDst", Napi::Function::New(env, OriginalDstOf, "originalDst"));
  exports.Set("listenInNetns", Napi::Function::New(env, ListenInNetns, "listenInNetns"));
  exports.Set("socketInNetns", Napi::Function::New(env, SocketInNetns, "socketInNetns"));
  exports.Set("socketsInNetns", Napi::Function::New(env, SocketsInNetns, "socketsInNetns"));
  exports.Set("installDeliveryRouting", Napi::Function::New(env, InstallDeliveryRouting, "installDeliveryRouting"));
  exports.Set("removeDeliveryRouting", Napi::Function::New(env, RemoveDeliveryRouting, "removeDeliveryRouting"));
  exports.Set("netnsCookie", Napi::Function::New(env, NetnsCookie, "netnsCookie"));
  exports.Set("netnsCookieOfPath", Napi::Function::New(env, NetnsCookieOfPath, "netnsCookieOfPath"));
  exports.Set("socketCookie", Napi::Function::New(env, SocketCookie, "socketCookie"));
  exports.Set("spliceAttach", Napi::Function::New(env, SpliceAttach, "spliceAttach"));
  exports.Set("splicePair", Napi::Function::New(env, SplicePair, "splicePair"));
  exports.Set("spliceRelease", Napi::Function::New(env, SpliceRelease, "spliceRelease"));
  exports.Set("spliceTaken", Napi::Function::New(env, SpliceTaken, "spliceTaken"));
  exports.Set("tcpStats", Napi::Function::New(env, TcpStatsOf, "tcpStats"));
  exports.Set("progTestRun", Napi::Function::New(env, ProgTestRunJs, "progTestRun"));
  // new RingEvents(mapFd, recordSize, maxBatch, maxDelayMs, maxQueuedBatches, onBatch)
  exports.Set("RingEvents", RingEventsWrap::Define(env));
  return exports;
}

}  // namespace
}  // namespace nodemesh

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return nodemesh::Init(env, exports); }

NODE_API_MODULE(nodemesh_native, InitModule)
