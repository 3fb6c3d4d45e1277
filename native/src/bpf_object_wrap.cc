// The JavaScript handle of a loaded BPF object.
#include "bpf_object_wrap.h"

namespace nodemesh {

Napi::Function BpfObjectWrap::Define(Napi::Env env) {
  return DefineClass(env, "BpfObject",
                     {
                         InstanceMethod<&BpfObjectWrap::Programs>("programs"),
                         InstanceMethod<&BpfObjectWrap::Maps>("maps"),
                         InstanceMethod<&BpfObjectWrap::Close>("close"),
                         InstanceAccessor<&BpfObjectWrap::Closed>("closed"),
                     });
}

Napi::Object BpfObjectWrap::NewInstance(Napi::Env env, const Napi::FunctionReference& ctor,
                                        std::unique_ptr<BpfObjectOwner> owner) {
  // The External carries the owner in; the constructor takes it over.
  auto external = Napi::External<BpfObjectOwner>::New(env, owner.get());
  Napi::Object obj = ctor.New({external});
  owner.release();
  return obj;
}

BpfObjectWrap::BpfObjectWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObjectWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "BpfObject is created by loadObject(), not by new");
  owner_.reset(info[0].As<Napi::External<BpfObjectOwner>>().Data());
}

Napi::Value BpfObjectWrap::Programs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto programs = owner_ ? owner_->Programs() : std::vector<ProgramInfo>{};
  Napi::Array out = Napi::Array::New(env, programs.size());
  for (size_t i = 0; i < programs.size(); i++) {
    Napi::Object p = Napi::Object::New(env);
    p.Set("name", programs[i].name);
    p.Set("section", programs[i].section);
    p.Set("fd", programs[i].fd);
    p.Set("type", programs[i].type);
    p.Set("attachType", programs[i].attach_type);
    out.Set(static_cast<uint32_t>(i), p);
  }
  return out;
}

Napi::Value BpfObjectWrap::Maps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto maps = owner_ ? owner_->Maps() : std::vector<MapInfo>{};
  Napi::Array out = Napi::Array::New(env, maps.size());
  for (size_t i = 0; i < maps.size(); i++) {
    Napi::Object m = Napi::Object::New(env);
    m.Set("name", maps[i].name);
    m.Set("fd", maps[i].fd);
    m.Set("type", maps[i].type);
    m.Set("keySize", maps[i].key_size);
    m.Set("valueSize", maps[i].value_size);
    m.Set("maxEntries", maps[i].max_entries);
    out.Set(static_cast<uint32_t>(i), m);
  }
  return out;
}

Napi::Value BpfObjectWrap::Close(const Napi::CallbackInfo& info) {
  if (owner_) owner_->Close();
  return info.Env().Undefined();
}

Napi::Value BpfObjectWrap::Closed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !owner_ || owner_->closed());
}

}  // namespace nodemesh
