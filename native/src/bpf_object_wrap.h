// The JavaScript handle of a loaded BPF object: program and map fds by name, and close().
// Only loadObject() creates one (through NewInstance), never JS code.
#pragma once

#include <napi.h>

#include <memory>

#include "bpf_object_owner.h"

namespace nodemesh {

class BpfObjectWrap : public Napi::ObjectWrap<BpfObjectWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // Hands `owner` to a new JS handle; `ctor` is the class Define() returned.
  static Napi::Object NewInstance(Napi::Env env, const Napi::FunctionReference& ctor,
                                  std::unique_ptr<BpfObjectOwner> owner);
  explicit BpfObjectWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Programs(const Napi::CallbackInfo& info);
  Napi::Value Maps(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Closed(const Napi::CallbackInfo& info);

  std::unique_ptr<BpfObjectOwner> owner_;
};

}  // namespace nodemesh
