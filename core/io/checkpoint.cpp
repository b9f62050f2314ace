// Checkpoint files: writing a checkpoint directory atomically, reading it back with every
// checksum checked, finding the newest good one, pruning old ones, describing one.
// The model side (capture, restore, export) is in checkpoint_state.cpp.
#include "core/config.h"
#include "core/io/checkpoint.h"

#include "core/checksum.h"
#include "core/io/read_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <set>
#include <sstream>

#include <google/protobuf/text_format.h>

namespace deeptrain::io {
namespace fs = std::filesystem;

namespace {

constexpr char kMagic[] = "deeptrain checkpoint";
constexpr uint32_t kFormatVersion = 1;
constexpr char kTensorsFile[] = "tensors.pb";
constexpr char kManifestFile[] = "MANIFEST.pb";
constexpr char kPrefix[] = "ckpt-";
constexpr int kStepDigits = 10;

std::function<void(const char*)>& phase_hook() {
  static std::function<void(const char*)> hook;
  return hook;
}
void phase(const char* name) {
  if (phase_hook()) phase_hook()(name);
}

proto::DType to_proto(DType t) {
  switch (t) {
    case DType::f32: return proto::F32;
    case DType::f64: return proto::F64;
    case DType::f16: return proto::F16;
    case DType::bf16: return proto::BF16;
    case DType::i32: return proto::I32;
    case DType::i64: return proto::I64;
    case DType::u8: return proto::U8;
  }
  return proto::DTYPE_UNSET;
}

std::optional<DType> from_proto(proto::DType t) {
  switch (t) {
    case proto::F32: return DType::f32;
    case proto::F64: return DType::f64;
    case proto::F16: return DType::f16;
    case proto::BF16: return DType::bf16;
    case proto::I32: return DType::i32;
    case proto::I64: return DType::i64;
    case proto::U8: return DType::u8;
    default: return std::nullopt;
  }
}

std::string host_tag() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "host";
  std::string h(buf);
  for (char& c : h)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.') c = '_';
  return h.empty() ? "host" : h;
}

std::string without_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

// ---------------------------------------------------------------- writing

// A new file, written fully or failing with its path named.
class OutFile {
 public:
  explicit OutFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot write checkpoint file '{}': {}", path_, std::strerror(errno));
  }
  ~OutFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t done = ::write(fd_, p, n);
      if (done < 0 && errno == EINTR) continue;
      if (done < 0) fail("cannot write checkpoint file '{}': {}", path_, std::strerror(errno));
      p += done;
      n -= size_t(done);
      bytes_ += done;
    }
  }
  void write(const std::string& s) { write(s.data(), s.size()); }
  void sync_and_close() {
    if (::fsync(fd_) != 0) fail("cannot write checkpoint file '{}': fsync: {}", path_, std::strerror(errno));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("cannot write checkpoint file '{}': close: {}", path_, std::strerror(errno));
  }
  int64_t bytes() const { return bytes_; }

 private:
  std::string path_;
  int fd_ = -1;
  int64_t bytes_ = 0;
};

// Makes renames and new entries in dir durable. Some file systems cannot fsync a directory
// (EINVAL): there the rename is as durable as they allow.
void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("checkpoint directory '{}': cannot open: {}", dir, std::strerror(errno));
  const int err = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  if (err != 0 && err != EINVAL) fail("checkpoint directory '{}': fsync: {}", dir, std::strerror(err));
}

std::string varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(char(v | 0x80));
    v >>= 7;
  }
  out.push_back(char(v));
  return out;
}

// Writes every tensor as length-delimited TensorChunk records and describes each in m.
proto::TensorFile write_tensors(const std::string& path, const TrainingState& s,
                                proto::CheckpointManifest& m) {
  OutFile out(path);
  Sha256 sha;
  proto::TensorChunk chunk;
  std::string body;
  for (const NamedTensor& nt : s.tensors) {
    const Tensor& t = nt.tensor;
    proto::TensorEntry& e = *m.add_tensor();
    e.set_name(nt.name);
    e.set_dtype(to_proto(t.dtype()));
    for (int64_t d : t.shape().dims()) e.add_shape(d);
    e.set_nbytes(int64_t(t.nbytes()));
    e.set_file(kTensorsFile);
    e.set_file_offset(out.bytes());
    e.set_chunk_bytes(kCheckpointChunkBytes);
    const char* data = static_cast<const char*>(t.raw());
    for (int64_t off = 0, index = 0; off < e.nbytes(); off += kCheckpointChunkBytes, ++index) {
      const int64_t len = std::min(kCheckpointChunkBytes, e.nbytes() - off);
      chunk.set_tensor(nt.name);
      chunk.set_index(uint32_t(index));
      chunk.set_offset(off);
      chunk.set_data(data + off, size_t(len));
      chunk.set_crc32(crc32_of(chunk.data().data(), chunk.data().size()));
      e.add_chunk_crc32(chunk.crc32());
      if (!chunk.SerializeToString(&body)) fail("{}: cannot serialise tensor '{}'", path, nt.name);
      const std::string prefix = varint(body.size());
      out.write(prefix);
      out.write(body);
      sha.update(prefix);
      sha.update(body);
      phase("chunk");
    }
    e.set_file_bytes(out.bytes() - e.file_offset());
  }
  out.sync_and_close();
  proto::TensorFile f;
  f.set_name(kTensorsFile);
  f.set_size_bytes(out.bytes());
  f.set_sha256(sha.hex());
  return f;
}

// Everything but the tensors' descriptions.
proto::CheckpointManifest manifest_of(const TrainingState& s) {
  proto::CheckpointManifest m;
  m.set_format_version(kFormatVersion);
  m.set_producer("deeptrain " DEEPTRAIN_VERSION);
  m.set_created_unix(int64_t(std::time(nullptr)));
  m.set_world_size_at_save(s.world_size);
  m.set_complete(true);
  m.set_global_step(s.global_step);
  m.set_epoch(s.epoch);
  m.set_step_in_epoch(s.step_in_epoch);
  m.set_steps_per_epoch(s.steps_per_epoch);
  m.mutable_random()->set_seed(s.seed);
  m.mutable_random()->set_generator("philox4x32-10");
  m.mutable_optimizer()->set_name(s.optimizer);
  m.mutable_optimizer()->set_steps_taken(s.optimizer_steps);
  for (const NamedTensor& t : s.tensors)
    if (t.name.starts_with("optim/")) m.mutable_optimizer()->add_slots(t.name.substr(6));
  m.mutable_schedule()->set_learning_rate(s.learning_rate);
  m.mutable_schedule()->set_total_steps(s.total_steps);
  *m.mutable_partial_epoch() = s.partial_epoch;
  *m.mutable_config() = s.config;
  *m.mutable_model() = s.model;
  for (const auto& h : s.history) *m.add_history() = h;
  for (const auto& p : s.param_layout) *m.add_param_layout() = p;
  return m;
}

void write_manifest(const std::string& path, const proto::CheckpointManifest& m) {
  proto::CheckpointManifestFile f;
  f.set_magic(kMagic);
  f.set_format_version(kFormatVersion);
  if (!m.SerializeToString(f.mutable_manifest())) fail("{}: cannot serialise the manifest", path);
  f.set_manifest_crc32(crc32_of(f.manifest().data(), f.manifest().size()));
  OutFile out(path);
  out.write(f.SerializeAsString());
  out.sync_and_close();
}

void check_savable(const TrainingState& s) {
  DT_CHECK(s.global_step >= 0, "checkpoint of global step {}", s.global_step);
  std::set<std::string> names;
  for (const NamedTensor& t : s.tensors) {
    DT_CHECK(!t.name.empty(), "a checkpoint tensor has no name");
    DT_CHECK(names.insert(t.name).second, "checkpoint tensor '{}' appears twice", t.name);
    DT_CHECK(t.tensor.defined() && t.tensor.device() == Device::cpu &&
                 t.tensor.layout() == Layout::plain,
             "checkpoint tensor '{}' must be a plain host tensor", t.name);
  }
}

// ---------------------------------------------------------------- directories

// True when dir holds nothing but regular files a checkpoint consists of: a directory we may
// remove without destroying anything that is not ours.
bool holds_only_checkpoint_files(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string n = entry.path().filename();
    if ((n != kTensorsFile && n != kManifestFile) || !entry.is_regular_file()) return false;
  }
  return !ec;
}

// Removes a checkpoint directory's files, the manifest first (so a crash halfway leaves a
// directory that no reader takes for a checkpoint), then the directory.
bool remove_checkpoint_files(const std::string& dir) {
  ::unlink((dir + "/" + kManifestFile).c_str());
  ::unlink((dir + "/" + kTensorsFile).c_str());
  return ::rmdir(dir.c_str()) == 0 || errno == ENOENT;
}

// Puts the finished temporary directory at final_path. An existing checkpoint of the same step
// is swapped out atomically where the file system can (renameat2 RENAME_EXCHANGE), else moved
// aside first (a crash between the two renames leaves the older checkpoints).
void move_into_place(const std::string& tmp, const std::string& final_path, const std::string& aside) {
  if (::rename(tmp.c_str(), final_path.c_str()) == 0) return;
  if (errno != ENOTEMPTY && errno != EEXIST)
    fail("cannot rename '{}' to '{}': {}", tmp, final_path, std::strerror(errno));
  if (!holds_only_checkpoint_files(final_path))
    fail("'{}' exists and holds files that are not a deeptrain checkpoint's: not replacing it",
         final_path);
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_path.c_str(), RENAME_EXCHANGE) == 0) {
    remove_checkpoint_files(tmp);  // now the old checkpoint
    return;
  }
  if (::rename(final_path.c_str(), aside.c_str()) != 0)
    fail("cannot move the old '{}' aside: {}", final_path, std::strerror(errno));
  if (::rename(tmp.c_str(), final_path.c_str()) != 0)
    fail("cannot rename '{}' to '{}': {}", tmp, final_path, std::strerror(errno));
  remove_checkpoint_files(aside);
}

// "ckpt-" and exactly 10 digits.
bool is_checkpoint_name(const std::string& n) {
  return n.size() == sizeof(kPrefix) - 1 + kStepDigits && n.starts_with(kPrefix) &&
         std::all_of(n.begin() + sizeof(kPrefix) - 1, n.end(), ::isdigit);
}

struct FoundCheckpoint {
  int64_t step;
  std::string name;  // "ckpt-0000000400"
};

// The ckpt-<10 digits> directories of dir, newest first.
std::vector<FoundCheckpoint> list_checkpoints(const std::string& dir) {
  std::vector<FoundCheckpoint> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string n = entry.path().filename();
    if (!is_checkpoint_name(n) || !entry.is_directory()) continue;
    out.push_back({std::stoll(n.substr(sizeof(kPrefix) - 1)), n});
  }
  if (ec) fail_input("checkpoint directory '{}': cannot list: {}", dir, ec.message());
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.step > b.step; });
  return out;
}

// Removes ".ckpt-*.tmp-<host>-<pid>" and ".ckpt-*.deleting-<host>-<pid>" directories that a
// save or prune on this host left when its process died (the pid no longer exists).
void remove_stale_temporaries(const std::string& dir, std::vector<std::string>* warnings) {
  const std::string host = host_tag();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string n = entry.path().filename();
    if (!n.starts_with(std::string(".") + kPrefix) || !entry.is_directory()) continue;
    size_t at = n.find(".tmp-" + host + "-");
    size_t len = 6 + host.size();
    if (at == std::string::npos) at = n.find(".deleting-" + host + "-"), len = 11 + host.size();
    if (at == std::string::npos) continue;
    const std::string pid_text = n.substr(at + len);
    if (pid_text.empty() || !std::all_of(pid_text.begin(), pid_text.end(), ::isdigit)) continue;
    const pid_t pid = pid_t(std::stol(pid_text));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    if (!holds_only_checkpoint_files(entry.path()) || !remove_checkpoint_files(entry.path()))
      if (warnings) warnings->push_back(fmt::format("cannot remove the stale '{}'", entry.path().string()));
  }
}

// Keeps the newest keep_last complete checkpoints (the one just written always among them).
// Directories without a valid manifest are not ours to judge and stay.
void prune(const std::string& dir, int keep_last, const std::string& just_written,
           std::vector<std::string>* warnings) {
  remove_stale_temporaries(dir, warnings);
  if (keep_last <= 0) return;
  int kept = 1;  // just_written
  for (const FoundCheckpoint& c : list_checkpoints(dir)) {
    if (c.name == just_written) continue;
    const std::string path = dir + "/" + c.name;
    try {
      if (read_checkpoint_manifest(path).global_step() != c.step) continue;
    } catch (const Error&) {
      continue;
    }
    if (kept < keep_last) {
      ++kept;
      continue;
    }
    const std::string aside = fmt::format("{}/.{}.deleting-{}-{}", dir, c.name, host_tag(), ::getpid());
    const bool removed = holds_only_checkpoint_files(path) &&
                         ::rename(path.c_str(), aside.c_str()) == 0 && remove_checkpoint_files(aside);
    if (!removed && warnings) warnings->push_back(fmt::format("cannot remove the old checkpoint '{}'", path));
  }
}

// ---------------------------------------------------------------- reading

struct CheckpointPaths {
  std::string dir, manifest, tensors;
};

CheckpointPaths paths_of(const std::string& path) {
  std::string dir = without_trailing_slashes(path);
  if (fs::path(dir).filename() == kManifestFile) dir = fs::path(dir).parent_path().string();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir)) fail_input("{}: no such checkpoint directory", path);
  CheckpointPaths p{dir, dir + "/" + kManifestFile, dir + "/" + kTensorsFile};
  if (!fs::exists(p.manifest))
    fail_input("{}: incomplete checkpoint: no {} (its save did not finish)", dir, kManifestFile);
  return p;
}

proto::CheckpointManifest read_manifest_file(const std::string& path) {
  proto::CheckpointManifestFile f;
  if (!f.ParseFromString(read_file(path)) || f.magic() != kMagic)
    fail_input("{}: not a deeptrain checkpoint manifest (truncated or corrupt)", path);
  if (f.format_version() != kFormatVersion)
    fail_input("{}: format_version {} is not supported (this build reads {})", path,
               f.format_version(), kFormatVersion);
  if (crc32_of(f.manifest().data(), f.manifest().size()) != f.manifest_crc32())
    fail_input("{}: fails its CRC-32 check (truncated or corrupt)", path);
  proto::CheckpointManifest m;
  if (!m.ParseFromString(f.manifest())) fail_input("{}: the manifest does not parse (corrupt)", path);
  if (!m.complete()) fail_input("{}: the checkpoint is not marked complete", path);
  return m;
}

// Reads the varint length prefix at pos; returns its size in bytes (0: none readable).
int read_varint(int fd, int64_t pos, uint64_t* value, char* raw) {
  const ssize_t got = ::pread(fd, raw, 10, pos);
  *value = 0;
  for (int i = 0; i < got; ++i) {
    *value |= uint64_t(uint8_t(raw[i]) & 0x7f) << (7 * i);
    if (!(uint8_t(raw[i]) & 0x80)) return i + 1;
  }
  return 0;
}

// Reads every tensor the manifest lists from tensors.pb, checking each chunk against the
// manifest and its CRC-32, and the whole file against its size and SHA-256.
std::vector<NamedTensor> read_tensors(const std::string& path, const proto::CheckpointManifest& m) {
  if (m.file_size() != 1 || m.file(0).name() != kTensorsFile)
    fail_input("{}: the manifest lists {} payload files, this build reads one {}", path,
               m.file_size(), kTensorsFile);
  const int64_t expected_size = m.file(0).size_bytes();
  struct Fd {
    int fd;
    ~Fd() { if (fd >= 0) ::close(fd); }
  } file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  const int fd = file.fd;
  if (fd < 0) fail_input("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail_input("{}: cannot stat: {}", path, std::strerror(errno));
  if (st.st_size < expected_size)
    fail_input("{}: truncated: manifest says {} bytes, file has {}", path, expected_size, st.st_size);
  if (st.st_size > expected_size)
    fail_input("{}: has {} bytes, the manifest says {} (corrupt)", path, st.st_size, expected_size);

  std::vector<NamedTensor> out;
  Sha256 sha;
  proto::TensorChunk chunk;
  std::string buf;
  int64_t pos = 0;
  for (const proto::TensorEntry& e : m.tensor()) {
    const std::optional<DType> dt = from_proto(e.dtype());
    const Shape shape(std::vector<int64_t>(e.shape().begin(), e.shape().end()));
    const bool sane = dt && e.file() == kTensorsFile && e.file_offset() == pos &&
                      std::all_of(e.shape().begin(), e.shape().end(), [](int64_t d) { return d >= 0; }) &&
                      e.nbytes() == shape.numel() * int64_t(dtype_size(*dt)) && e.chunk_bytes() > 0 &&
                      e.nbytes() <= e.file_bytes() && e.file_offset() + e.file_bytes() <= expected_size &&
                      e.chunk_crc32_size() == (e.nbytes() + e.chunk_bytes() - 1) / e.chunk_bytes();
    if (!sane) fail_input("{}: the manifest's entry for tensor '{}' is inconsistent (corrupt)", path, e.name());
    Tensor t = Tensor::empty(shape, *dt);
    for (int index = 0; index < e.chunk_crc32_size(); ++index) {
      const std::string where = fmt::format("{}: tensor '{}' chunk {}", path, e.name(), index);
      const int64_t offset = index * e.chunk_bytes();
      const int64_t len = std::min(e.chunk_bytes(), e.nbytes() - offset);
      uint64_t record = 0;
      char raw[10];
      const int prefix = read_varint(fd, pos, &record, raw);
      if (prefix == 0 || record > uint64_t(expected_size) || pos + prefix + int64_t(record) > expected_size)
        fail_input("{} (at byte {}): bad record length (corrupt)", where, pos);
      buf.resize(record);
      if (::pread(fd, buf.data(), record, pos + prefix) != ssize_t(record))
        fail_input("{}: cannot read: {}", where, std::strerror(errno));
      sha.update(raw, size_t(prefix));
      sha.update(buf);
      pos += prefix + int64_t(record);
      if (!chunk.ParseFromString(buf)) fail_input("{}: the record does not parse (corrupt)", where);
      if (chunk.tensor() != e.name() || chunk.index() != uint32_t(index) || chunk.offset() != offset ||
          int64_t(chunk.data().size()) != len)
        fail_input("{}: the record does not match the manifest (it says tensor '{}' chunk {}, {} bytes "
                   "at offset {}; expected {} bytes at offset {}) (corrupt)", where, chunk.tensor(),
                   chunk.index(), chunk.data().size(), chunk.offset(), len, offset);
      const uint32_t crc = crc32_of(chunk.data().data(), chunk.data().size());
      if (crc != chunk.crc32() || crc != e.chunk_crc32(index)) fail_input("{} fails its CRC-32 check", where);
      std::memcpy(static_cast<char*>(t.raw()) + offset, chunk.data().data(), size_t(len));
    }
    if (pos - e.file_offset() != e.file_bytes())
      fail_input("{}: tensor '{}' takes {} bytes, the manifest says {} (corrupt)", path, e.name(),
                 pos - e.file_offset(), e.file_bytes());
    out.push_back({e.name(), std::move(t)});
  }
  if (pos != expected_size)
    fail_input("{}: {} bytes after the last tensor (corrupt)", path, expected_size - pos);
  if (sha.hex() != m.file(0).sha256()) fail_input("{}: SHA-256 differs from the manifest's (corrupt)", path);
  return out;
}

TrainingState state_of(const proto::CheckpointManifest& m) {
  TrainingState s;
  s.global_step = m.global_step();
  s.epoch = m.epoch();
  s.step_in_epoch = m.step_in_epoch();
  s.steps_per_epoch = m.steps_per_epoch();
  s.seed = m.random().seed();
  s.optimizer = m.optimizer().name();
  s.optimizer_steps = m.optimizer().steps_taken();
  s.learning_rate = m.schedule().learning_rate();
  s.total_steps = m.schedule().total_steps();
  s.partial_epoch = m.partial_epoch();
  s.param_layout.assign(m.param_layout().begin(), m.param_layout().end());
  s.config = m.config();
  upgrade_config(s.config);  // a checkpoint of config schema 1: run.backend/math were strings
  s.model = m.model();
  s.history.assign(m.history().begin(), m.history().end());
  s.world_size = m.world_size_at_save();
  s.producer = m.producer();
  s.created_unix = m.created_unix();
  return s;
}

template <class... Args>
void add_line(std::string& out, fmt::format_string<Args...> f, Args&&... args) {
  out += fmt::format(f, std::forward<Args>(args)...);
  out += '\n';
}

std::string human_bytes(int64_t n) {
  if (n < 10 * 1024) return fmt::format("{} B", n);
  if (n < 10 * 1024 * 1024) return fmt::format("{:.1f} KiB", n / 1024.0);
  if (n < int64_t{10} << 30) return fmt::format("{:.1f} MiB", n / 1048576.0);
  return fmt::format("{:.1f} GiB", n / 1073741824.0);
}

}  // namespace

std::string checkpoint_name(int64_t global_step) {
  return fmt::format("{}{:0{}}", kPrefix, global_step, kStepDigits);
}

void set_save_phase_hook(std::function<void(const char*)> hook) { phase_hook() = std::move(hook); }

std::string save_checkpoint(const std::string& dir_arg, const TrainingState& state, int keep_last,
                            std::vector<std::string>* warnings) {
  check_savable(state);
  const std::string dir = without_trailing_slashes(dir_arg);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("checkpoint directory '{}': cannot create: {}", dir, ec.message());
  const std::string name = checkpoint_name(state.global_step);
  const std::string final_path = dir + "/" + name;
  const std::string tag = fmt::format("{}-{}", host_tag(), ::getpid());
  const std::string tmp = fmt::format("{}/.{}.tmp-{}", dir, name, tag);
  remove_checkpoint_files(tmp);  // left by an earlier process with our pid
  if (::mkdir(tmp.c_str(), 0755) != 0)
    fail("checkpoint directory '{}': cannot create '{}': {}", dir, tmp, std::strerror(errno));
  try {
    phase("tmp-dir");
    proto::CheckpointManifest m = manifest_of(state);
    *m.add_file() = write_tensors(tmp + "/" + kTensorsFile, state, m);
    phase("tensors-synced");
    write_manifest(tmp + "/" + kManifestFile, m);
    fsync_dir(tmp);
    phase("manifest-written");
    move_into_place(tmp, final_path, fmt::format("{}/.{}.deleting-{}", dir, name, tag));
    fsync_dir(dir);
    phase("renamed");
  } catch (...) {
    remove_checkpoint_files(tmp);
    throw;
  }
  prune(dir, keep_last, name, warnings);
  phase("pruned");
  return final_path;
}

proto::CheckpointManifest read_checkpoint_manifest(const std::string& path) {
  return read_manifest_file(paths_of(path).manifest);
}

TrainingState load_checkpoint(const std::string& path) {
  const CheckpointPaths p = paths_of(path);
  const proto::CheckpointManifest m = read_manifest_file(p.manifest);
  TrainingState s = state_of(m);
  s.tensors = read_tensors(p.tensors, m);
  return s;
}

std::optional<std::string> find_latest_checkpoint(const std::string& dir_arg,
                                                  std::vector<std::string>* skipped) {
  const std::string dir = without_trailing_slashes(dir_arg);
  if (!fs::is_directory(dir)) return std::nullopt;
  for (const FoundCheckpoint& c : list_checkpoints(dir)) {
    const std::string path = dir + "/" + c.name;
    try {
      const TrainingState s = load_checkpoint(path);
      if (s.global_step != c.step)
        fail_input("{}: its manifest says global step {} (renamed?)", path, s.global_step);
      return path;
    } catch (const Error& e) {
      if (skipped) skipped->push_back(e.what());
    }
  }
  return std::nullopt;
}

std::string resolve_checkpoint(const std::string& path, std::vector<std::string>* skipped) {
  fs::path p(path);
  if (p.filename().empty()) p = p.parent_path();  // "ckpt-0000000400/"
  const bool is_checkpoint = p.filename() == kManifestFile || fs::exists(p / kManifestFile) ||
                             is_checkpoint_name(p.filename());
  if (is_checkpoint) return path;
  if (!fs::is_directory(path)) fail_input("{}: no such checkpoint or checkpoint directory", path);
  std::vector<std::string> reasons;
  if (auto latest = find_latest_checkpoint(path, &reasons)) {
    if (skipped) skipped->insert(skipped->end(), reasons.begin(), reasons.end());
    return *latest;
  }
  std::string why = reasons.empty() ? "it holds no ckpt-* directory" : "passed over: " + reasons[0];
  for (size_t i = 1; i < reasons.size(); ++i) why += "; " + reasons[i];
  fail_input("{}: no complete, valid checkpoint ({})", path, why);
}

std::string describe_checkpoint(const std::string& path, bool verify) {
  const CheckpointPaths p = paths_of(path);
  const proto::CheckpointManifest m = read_manifest_file(p.manifest);
  if (verify) load_checkpoint(path);
  std::string out;
  char when[64] = "?";
  const std::time_t t = std::time_t(m.created_unix());
  if (std::tm tm{}; gmtime_r(&t, &tm)) std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
  add_line(out, "checkpoint   {}", p.dir);
  add_line(out, "format       {} (written by {} on {}, {} rank{})", m.format_version(), m.producer(), when,
       m.world_size_at_save(), m.world_size_at_save() == 1 ? "" : "s");
  add_line(out, "position     global step {}: epoch {} (1-based, as train prints it), {} of its {} steps done",
           m.global_step(), m.epoch() + 1, m.step_in_epoch(), m.steps_per_epoch());
  add_line(out, "seed         {} ({})", m.random().seed(), m.random().generator());
  add_line(out, "optimizer    {}, {} steps taken, state {}; last lr {}", m.optimizer().name(),
       m.optimizer().steps_taken(), fmt::join(m.optimizer().slots(), ", "),
       m.schedule().learning_rate());
  for (const proto::TensorFile& f : m.file()) {
    std::error_code ec;
    const auto size = fs::file_size(p.dir + "/" + f.name(), ec);
    add_line(out, "file         {}: {} bytes{}, sha256 {}", f.name(), f.size_bytes(),
         ec ? " (missing!)" : int64_t(size) == f.size_bytes() ? "" : fmt::format(" (the file has {}!)", size),
         f.sha256());
  }
  if (verify) add_line(out, "verified     every chunk's CRC-32 and the file's SHA-256 match");
  int64_t total = 0;
  add_line(out, "tensors      {}", m.tensor_size());
  for (const proto::TensorEntry& e : m.tensor()) {
    const std::optional<DType> dt = from_proto(e.dtype());
    add_line(out, "  {:<36} {:<5} {:<18} {:>12}  {} chunk{}", e.name(), dt ? dtype_name(*dt) : "?",
         Shape(std::vector<int64_t>(e.shape().begin(), e.shape().end())).str(), human_bytes(e.nbytes()),
         e.chunk_crc32_size(), e.chunk_crc32_size() == 1 ? "" : "s");
    total += e.nbytes();
  }
  add_line(out, "  total {} ({} bytes)", human_bytes(total), total);
  add_line(out, "metrics      {} epoch{} finished", m.history_size(), m.history_size() == 1 ? "" : "s");
  for (const proto::EpochMetrics& h : m.history())
    add_line(out, "  epoch {:3}  step {:7}  train loss {:.4f}  train acc {:.4f}  test loss {:.4f}  test acc {:.4f}",
         h.epoch(), h.step(), h.train_loss(), h.train_accuracy(), h.test_loss(), h.test_accuracy());
  std::string config;
  google::protobuf::TextFormat::PrintToString(m.config(), &config);
  out += "config\n";
  std::istringstream lines(config);
  for (std::string l; std::getline(lines, l);) out += "  " + l + "\n";
  return out;
}

}  // namespace deeptrain::io
