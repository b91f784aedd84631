// Reading a tts-parity port kit from C++ (docs/port-kit.md): a vector file with a 40-line safetensors reader,
// the tolerance from manifest.json (nlohmann/json), the manifest's pass rule.
//
//   g++ -std=c++17 -O2 kit_check.cpp -o kit_check      (Debian/Ubuntu: apt-get install nlohmann-json3-dev)
//   ./kit_check KIT_DIR PORT_OUTPUTS.safetensors       (port outputs named "<vector id>/<output>")
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
using json = nlohmann::json;

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<double> data;  // every dtype read as double (the rule compares in double)
};

// safetensors: 8-byte little-endian header size N, N bytes of JSON {name: {dtype, shape, data_offsets}}, data.
class SafeTensors {
 public:
  explicit SafeTensors(const std::string& path) : path_(path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error(path + ": cannot open");
    uint64_t n = 0;
    f.read(reinterpret_cast<char*>(&n), 8);  // little-endian hosts
    std::string head(n, '\0');
    f.read(head.data(), static_cast<std::streamsize>(n));
    header_ = json::parse(head);
    bytes_.assign(std::istreambuf_iterator<char>(f), {});
  }
  bool has(const std::string& key) const { return header_.contains(key); }
  Tensor get(const std::string& key) const {
    if (!has(key)) throw std::runtime_error(path_ + ": no tensor '" + key + "'");
    const json& h = header_.at(key);
    Tensor t{h["shape"].get<std::vector<int64_t>>(), {}};
    const size_t a = h["data_offsets"][0], b = h["data_offsets"][1];
    const char* p = bytes_.data() + a;
    const std::string dt = h["dtype"];
    auto take = [&](auto zero, size_t width) {
      for (size_t i = a; i < b; i += width, p += width) {
        decltype(zero) v;
        std::memcpy(&v, p, width);
        t.data.push_back(static_cast<double>(v));
      }
    };
    if (dt == "F32") take(float{}, 4);
    else if (dt == "F64") take(double{}, 8);
    else if (dt == "I64") take(int64_t{}, 8);
    else if (dt == "I32") take(int32_t{}, 4);
    else if (dt == "BOOL") take(uint8_t{}, 1);
    else throw std::runtime_error(path_ + ": tensor '" + key + "' has dtype " + dt + ", not read here");
    return t;
  }

 private:
  std::string path_;
  json header_;
  std::vector<char> bytes_;
};

struct Verdict {
  bool passed;
  double ratio;  // "N x floor"
  std::string why;
};

// The manifest's rule for one output: same shape, all finite, max_abs and rel_l2 <= limit (k x floor).
Verdict judge(const json& out, const Tensor& ref, const Tensor& port) {
  if (port.shape != ref.shape) return {false, INFINITY, "shape differs (layout: " + out["layout"].get<std::string>() + ")"};
  double max_abs = 0, dd = 0, rr = 0;
  for (size_t i = 0; i < ref.data.size(); ++i) {
    if (!std::isfinite(port.data[i])) return {false, INFINITY, "non-finite at flat index " + std::to_string(i)};
    const double d = port.data[i] - ref.data[i];
    max_abs = std::max(max_abs, std::fabs(d));
    dd += d * d;
    rr += ref.data[i] * ref.data[i];
  }
  const double rel_l2 = rr > 0 ? std::sqrt(dd) / std::sqrt(rr) : (dd == 0 ? 0.0 : INFINITY);
  const json& tol = out["tolerance"];
  const double k = tol["k"];
  bool passed = true;
  double ratio = 0;
  for (const auto& s : tol["gate"]) {
    const double value = s == "max_abs" ? max_abs : rel_l2, limit = tol["limit"][s.get<std::string>()];
    passed = passed && value <= limit;
    ratio = std::max(ratio, value / (limit / k));
  }
  return {passed, ratio, "max_abs " + std::to_string(max_abs) + ", rel_l2 " + std::to_string(rel_l2)};
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: kit_check KIT_DIR PORT_OUTPUTS.safetensors\n";
    return 2;
  }
  try {
    const std::string kit = argv[1];
    std::ifstream mf(kit + "/manifest.json");
    const json m = json::parse(mf);
    if (m["schema"] != "tts-parity-kit/1") throw std::runtime_error("not a tts-parity-kit/1 manifest");
    const SafeTensors port(argv[2]);
    int judged = 0, failed = 0;
    for (const auto& v : m["vectors"]) {
      const std::string id = v["id"];
      bool any = false;
      for (const auto& o : v["outputs"]) any = any || port.has(id + "/" + o["name"].get<std::string>());
      if (!any) continue;  // not ported (yet)
      const SafeTensors vec(kit + "/" + v["file"].get<std::string>());
      bool ok = true;
      double worst = -1;
      std::string why;
      for (const auto& o : v["outputs"]) {
        const std::string name = o["name"];
        const Verdict r = judge(o, vec.get(o["key"]), port.get(id + "/" + name));
        ok = ok && r.passed;
        if (r.ratio > worst) worst = r.ratio, why = name + ": " + r.why;
      }
      ++judged;
      failed += !ok;
      std::cout << id << "  " << (ok ? "pass" : "FAIL") << "  " << worst << " x floor (k " << v["k"] << ")  " << why
                << "\n";
    }
    std::cout << judged << " vectors judged, " << failed << " failed\n";
    return judged > 0 && failed == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "kit_check: " << e.what() << "\n";
    return 2;
  }
}
