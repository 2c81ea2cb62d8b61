// Native kernels for midigen.sampling: one fused call per LSTM layer and one per sampled step.
//
// The Python sampler (midigen/sampling.py) is the reference; these kernels compute the same
// things in one pass over small arrays, where the reference spends ~5 us of dispatch per torch
// op or numpy call. Built on the user's machine by `midigen kernels build`
// (midigen/native.py); the sampler uses them when built and falls back to the reference when not.
//
//   midigen::lstm_cell_  gates (+ first-layer table rows, + bias) -> sigmoid -> new 2c and h/2,
//                        written where this layer and the next one read them (StepLSTM's layout).
//   midigen::choose_     the producer's controls on one step's logits (temperature, key and range,
//                        grammar, grid, voices, anti-stuck penalty, note-length cap), the nucleus filter, the
//                        draw (CDF inverted at a given uniform) and the musical-state update.
//
// Built with -ffp-contract=off: a*b+c rounds like the reference's separate multiply and add.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kNoteOn = 1, kNoteOff = 129, kTimeShift = 257, kPitches = 128, kPad = 0;

// exp for float, Cephes' range reduction and polynomial (~1 ulp over [-87, 88]); a plain
// function of floats so that the compiler vectorises the loops that call it.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.3365f), 88.3762f);
  // n = round(x / ln 2): adding and taking away 1.5 * 2^23 rounds to an integer (and, unlike
  // floor, lets the loops that call this vectorise)
  const float fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fx) + 127) << 23;  // 2^n
  return y * __builtin_bit_cast(float, bits);
}

// bfloat16 <-> float as bit operations the compiler vectorises (round to nearest even, like
// torch; no NaN handling: the values here are finite).
inline float to_float(float v) { return v; }
inline float to_float(c10::BFloat16 v) { return __builtin_bit_cast(float, static_cast<uint32_t>(v.x) << 16); }
template <typename T>
inline T from_float(float v);
template <>
inline float from_float<float>(float v) { return v; }
template <>
inline c10::BFloat16 from_float<c10::BFloat16>(float v) {
  const uint32_t bits = __builtin_bit_cast(uint32_t, v);
  return c10::BFloat16(static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16), c10::BFloat16::from_bits());
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// Plain loops over restrict pointers, kept out of line so that each one vectorises on its own.
__attribute__((noinline)) void sigmoid_(float* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = sigmoid(x[j]);
}

template <typename Hd>
__attribute__((noinline)) void cell_update(const float* __restrict gi, const float* __restrict gf,
                                           const float* __restrict go, const float* __restrict gg,
                                           float* __restrict c2, Hd* __restrict h, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    float c = c2[j] * gf[j];
    c = c + 4.0f * (gi[j] * gg[j]);
    c = c - 2.0f * gi[j];
    c2[j] = c;
    h[j] = from_float<Hd>(go[j] * (sigmoid(c) - 0.5f));
  }
}

void check_cpu_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), name, " must be a contiguous CPU tensor");
}

// gates = sigmoid(pre [+ table[ids]] [+ bias]), gate blocks (i, f, o, g) with g's rows doubled;
// 2c <- f * 2c + 4 i sg - 2 i;  h/2 <- o * (sigmoid(2c) - 1/2).
template <typename P, typename Hd>
void cell(const at::Tensor& pre, const float* table, const int64_t* ids, const float* row_bias,
          bool row_bias_per_file, const float* bias, float* c2, Hd* h, Hd* own_in, Hd* next_in, int64_t B,
          int64_t H) {
  const P* p = pre.data_ptr<P>();
  std::vector<float> g(4 * H);
  for (int64_t b = 0; b < B; ++b) {
    const P* pb = p + b * 4 * H;
    float* gb = g.data();
    if (table != nullptr) {
      const float* row = table + ids[b] * 4 * H;
      if (row_bias != nullptr) {
        const float* rb = row_bias + (row_bias_per_file ? b * 4 * H : 0);
        for (int64_t j = 0; j < 4 * H; ++j) gb[j] = (row[j] + rb[j]) + to_float(pb[j]);
      } else {
        for (int64_t j = 0; j < 4 * H; ++j) gb[j] = row[j] + to_float(pb[j]);
      }
    } else if (bias != nullptr) {
      for (int64_t j = 0; j < 4 * H; ++j) gb[j] = to_float(pb[j]) + bias[j];
    } else {
      for (int64_t j = 0; j < 4 * H; ++j) gb[j] = to_float(pb[j]);
    }
    sigmoid_(gb, 4 * H);
    Hd* hb = h + b * H;
    cell_update<Hd>(gb, gb + H, gb + 2 * H, gb + 3 * H, c2 + b * H, hb, H);
    if (own_in != nullptr) std::copy(hb, hb + H, own_in + b * 2 * H + H);
    if (next_in != nullptr) std::copy(hb, hb + H, next_in + b * 2 * H);
  }
}

void lstm_cell_(const at::Tensor& pre, const std::optional<at::Tensor>& table,
                const std::optional<at::Tensor>& ids, const std::optional<at::Tensor>& row_bias,
                const std::optional<at::Tensor>& bias, const at::Tensor& c2, const at::Tensor& h,
                const std::optional<at::Tensor>& own_in, const std::optional<at::Tensor>& next_in) {
  check_cpu_contiguous(pre, "pre");
  check_cpu_contiguous(c2, "c");
  check_cpu_contiguous(h, "h");
  const int64_t B = c2.size(0), H = c2.size(1);
  TORCH_CHECK(c2.scalar_type() == at::kFloat, "c must be float32");
  TORCH_CHECK(pre.dim() == 2 && pre.size(0) == B && pre.size(1) == 4 * H, "pre must be (B, 4H)");
  TORCH_CHECK(h.sizes() == c2.sizes(), "h must be (B, H)");
  TORCH_CHECK(table.has_value() == ids.has_value(), "table and ids go together");
  const float* table_p = nullptr;
  const int64_t* ids_p = nullptr;
  if (table.has_value()) {
    check_cpu_contiguous(*table, "table");
    check_cpu_contiguous(*ids, "ids");
    TORCH_CHECK(table->scalar_type() == at::kFloat && table->size(1) == 4 * H, "table must be float32 (V, 4H)");
    TORCH_CHECK(ids->scalar_type() == at::kLong && ids->numel() == B, "ids must be int64 (B,)");
    table_p = table->data_ptr<float>();
    ids_p = ids->data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) TORCH_CHECK(ids_p[b] >= 0 && ids_p[b] < table->size(0), "id out of range");
  }
  // bias: (4H,); row_bias, added to the first layer's table rows: (4H,) or one per file (B, 4H)
  auto vec = [&](const std::optional<at::Tensor>& t, const char* name, bool per_file_ok) -> const float* {
    if (!t.has_value()) return nullptr;
    check_cpu_contiguous(*t, name);
    TORCH_CHECK(t->scalar_type() == at::kFloat && (t->numel() == 4 * H || (per_file_ok && t->numel() == B * 4 * H)),
                name, per_file_ok ? " must be float32 (4H,) or (B, 4H)" : " must be float32 (4H,)");
    return t->data_ptr<float>();
  };
  const float* row_bias_p = vec(row_bias, "row_bias", true);
  const bool row_bias_per_file = row_bias.has_value() && row_bias->numel() == B * 4 * H && B > 1;
  const float* bias_p = vec(bias, "bias", false);
  auto io = [&](const std::optional<at::Tensor>& t, const char* name) {
    if (!t.has_value()) return;
    check_cpu_contiguous(*t, name);
    TORCH_CHECK(t->scalar_type() == h.scalar_type() && t->size(0) == B && t->size(1) == 2 * H,
                name, " must be (B, 2H) of h's dtype");
  };
  io(own_in, "own_in");
  io(next_in, "next_in");
  float* c2_p = c2.data_ptr<float>();
  auto run = [&](auto pre_tag, auto h_tag) {
    using P = decltype(pre_tag);
    using Hd = decltype(h_tag);
    cell<P, Hd>(pre, table_p, ids_p, row_bias_p, row_bias_per_file, bias_p, c2_p, h.data_ptr<Hd>(),
                own_in.has_value() ? own_in->data_ptr<Hd>() : nullptr,
                next_in.has_value() ? next_in->data_ptr<Hd>() : nullptr, B, H);
  };
  const bool pre_bf16 = pre.scalar_type() == at::kBFloat16, h_bf16 = h.scalar_type() == at::kBFloat16;
  TORCH_CHECK(pre_bf16 || pre.scalar_type() == at::kFloat, "pre must be float32 or bfloat16");
  TORCH_CHECK(h_bf16 || h.scalar_type() == at::kFloat, "h must be float32 or bfloat16");
  if (pre_bf16 && h_bf16) run(c10::BFloat16(), c10::BFloat16());
  else if (pre_bf16) run(c10::BFloat16(), float());
  else if (h_bf16) run(float(), c10::BFloat16());
  else run(float(), float());
}

// Threshold of the nucleus filter on one row of weights: events sorted by weight, descending,
// are kept while the mass above them is <= top_p of the total; ties with the last kept stay.
float top_p_threshold(const float* w, int64_t V, double top_p, std::vector<float>& heap) {
  heap.assign(w, w + V);
  double total = 0.0;
  for (int64_t j = 0; j < V; ++j) total += w[j];
  std::make_heap(heap.begin(), heap.end());
  double above = 0.0;
  float last = heap.front();
  const double keep_mass = top_p * total;
  while (!heap.empty()) {
    const float v = heap.front();
    if (above > keep_mass) break;
    last = v;
    above += v;
    std::pop_heap(heap.begin(), heap.end());
    heap.pop_back();
  }
  return last;
}

// One sampled step for every file; returns nothing, writes the ids and the state in place.
void choose_(const at::Tensor& logits, double inv_temperature, const at::Tensor& blocked,
             double penalty, const at::Tensor& counts, const at::Tensor& recent, const at::Tensor& cursor,
             int64_t max_note, const at::Tensor& deadline, const at::Tensor& elapsed, const at::Tensor& out_of_key,
             int64_t voices, int64_t top_k, double top_p, const at::Tensor& uniform, const at::Tensor& done,
             int64_t max_steps, const at::Tensor& out, int64_t t, const at::Tensor& ids,
             const std::optional<at::Tensor>& grid, const std::optional<at::Tensor>& grid_phase) {
  for (const at::Tensor* t : {&logits, &blocked, &counts, &recent, &cursor, &deadline, &elapsed, &out_of_key,
                              &uniform, &done, &out, &ids})
    check_cpu_contiguous(*t, "sampler state");
  const int64_t B = logits.size(0), V = logits.size(1);
  TORCH_CHECK(logits.scalar_type() == at::kFloat && V > kTimeShift, "logits must be float32 (B, V > 257)");
  TORCH_CHECK(blocked.scalar_type() == at::kBool && blocked.size(0) == B && blocked.size(1) == kTimeShift,
              "blocked must be bool (B, 257)");
  TORCH_CHECK(counts.scalar_type() == at::kFloat && counts.size(0) == B && counts.size(1) == kPitches + 1,
              "counts must be float32 (B, 129)");
  TORCH_CHECK(recent.scalar_type() == at::kLong && recent.size(0) == B, "recent must be int64 (B, window)");
  TORCH_CHECK(cursor.scalar_type() == at::kLong && cursor.numel() == 1, "cursor must be int64 (1,)");
  TORCH_CHECK(deadline.scalar_type() == at::kLong && deadline.size(0) == B && deadline.size(1) == kPitches,
              "deadline must be int64 (B, 128)");
  TORCH_CHECK(elapsed.scalar_type() == at::kLong && elapsed.numel() == B, "elapsed must be int64 (B,)");
  TORCH_CHECK(out_of_key.scalar_type() == at::kBool && out_of_key.numel() == kPitches, "out_of_key must be bool (128,)");
  TORCH_CHECK(uniform.scalar_type() == at::kDouble && uniform.numel() == B, "uniform must be float64 (B,)");
  TORCH_CHECK(done.scalar_type() == at::kBool && done.numel() == B, "done must be bool (B,)");
  TORCH_CHECK(out.scalar_type() == at::kLong && out.size(0) == B && t >= 0 && t < out.size(1), "out must be int64 (B, T)");
  TORCH_CHECK(ids.scalar_type() == at::kLong && ids.numel() == B, "ids must be int64 (B,)");
  // grid: (steps a beat, 1 + shifts) bool, as sampling.grid_table: column 0 a NOTE_ON may start at
  // the position in the beat, column s a TIME_SHIFT of s steps lands on the grid.
  // grid_phase: (B,) int64, where each file's step 0 lies in its beat.
  const bool* grd = nullptr;
  const int64_t* phase = nullptr;
  int64_t beat = 1;
  if (grid.has_value()) {
    check_cpu_contiguous(*grid, "grid");
    TORCH_CHECK(grid->scalar_type() == at::kBool && grid->dim() == 2 && grid->size(0) > 0 &&
                    grid->size(1) == 1 + V - kTimeShift,
                "grid must be bool (steps a beat, 1 + V - 257)");
    TORCH_CHECK(grid_phase.has_value(), "a grid needs its phase");
    check_cpu_contiguous(*grid_phase, "grid_phase");
    TORCH_CHECK(grid_phase->scalar_type() == at::kLong && grid_phase->numel() == B, "grid_phase must be int64 (B,)");
    grd = grid->data_ptr<bool>();
    phase = grid_phase->data_ptr<int64_t>();
    beat = grid->size(0);
  }

  float* lg = logits.data_ptr<float>();
  bool* blk = blocked.data_ptr<bool>();
  float* cnt = counts.data_ptr<float>();
  int64_t* rec = recent.data_ptr<int64_t>();
  int64_t* cur = cursor.data_ptr<int64_t>();
  int64_t* dl = deadline.data_ptr<int64_t>();
  int64_t* el = elapsed.data_ptr<int64_t>();
  const bool* ook = out_of_key.data_ptr<bool>();
  const double* u = uniform.data_ptr<double>();
  bool* dn = done.data_ptr<bool>();
  int64_t* o = out.data_ptr<int64_t>();
  int64_t* next_ids = ids.data_ptr<int64_t>();
  const int64_t window = recent.size(1), T = out.size(1);
  const float inv_t = static_cast<float>(inv_temperature), pen = static_cast<float>(penalty);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  constexpr int64_t never = std::numeric_limits<int64_t>::max();

  std::vector<float> w(V), scratch;
  std::vector<double> cdf(V);
  std::vector<int64_t> tok(B);
  for (int64_t b = 0; b < B; ++b) {
    float* l = lg + b * V;
    if (inv_t != 1.0f)
      for (int64_t j = 0; j < V; ++j) l[j] = l[j] * inv_t;
    const bool* bb = blk + b * kTimeShift;
    for (int64_t j = 0; j < kTimeShift; ++j)
      if (bb[j]) l[j] = neg_inf;
    if (grd != nullptr) {  // a note starts only on the grid; a time shift only lands on it
      const int64_t pos = ((el[b] + phase[b]) % beat + beat) % beat;
      const bool* row = grd + pos * (1 + V - kTimeShift);
      if (!row[0])
        for (int64_t p = 0; p < kPitches; ++p) l[kNoteOn + p] = neg_inf;
      for (int64_t j = kTimeShift; j < V; ++j)
        if (!row[1 + j - kTimeShift]) l[j] = neg_inf;
    }
    if (voices >= 0) {  // a file with `voices` notes sounding (its allowed NOTE_OFFs) may not start another
      int64_t sounding = 0;
      for (int64_t p = 0; p < kPitches; ++p) sounding += !bb[kNoteOff + p];
      if (sounding >= voices)
        for (int64_t p = 0; p < kPitches; ++p) l[kNoteOn + p] = neg_inf;
    }
    if (pen > 0.0f) {
      const float* cb = cnt + b * (kPitches + 1);
      for (int64_t p = 0; p < kPitches; ++p) l[kNoteOn + p] = l[kNoteOn + p] - pen * cb[p];
    }
    if (max_note >= 0) {
      const int64_t* db = dl + b * kPitches;
      bool any = false;
      for (int64_t p = 0; p < kPitches; ++p) any |= db[p] <= el[b];
      if (any) {  // such a file may only end its overdue notes
        for (int64_t j = 0; j < V; ++j) l[j] = neg_inf;
        for (int64_t p = 0; p < kPitches; ++p)
          if (db[p] <= el[b]) l[kNoteOff + p] = 0.0f;
      }
    }
    float m = neg_inf;
    for (int64_t j = 0; j < V; ++j) m = std::max(m, l[j]);
    for (int64_t j = 0; j < V; ++j) {
      const float x = l[j] - m;
      w[j] = x == neg_inf ? 0.0f : exp_approx(x);
    }
    if (top_k > 0 && top_k < V) {
      scratch.assign(w.begin(), w.end());
      std::nth_element(scratch.begin(), scratch.begin() + (V - top_k), scratch.end());
      const float kth = scratch[V - top_k];
      for (int64_t j = 0; j < V; ++j)
        if (w[j] < kth) w[j] = 0.0f;
    }
    if (top_p < 1.0) {
      const float threshold = top_p_threshold(w.data(), V, top_p, scratch);
      for (int64_t j = 0; j < V; ++j)
        if (w[j] < threshold) w[j] = 0.0f;
    }
    double acc = 0.0;
    for (int64_t j = 0; j < V; ++j) cdf[j] = acc += w[j];
    const double target = u[b] * acc;
    const int64_t picked = std::upper_bound(cdf.begin(), cdf.end(), target) - cdf.begin();
    tok[b] = dn[b] ? kPad : std::min(picked, V - 1);
  }

  // The musical state, as _Tracker.update: the ring cursor is shared and moves on once if any
  // file played a NOTE_ON.
  const int64_t c = *cur;
  bool any_on = false;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t id = tok[b];
    o[b * T + t] = id;
    next_ids[b] = id;
    if (id >= kTimeShift) el[b] += id - kTimeShift + 1;
    bool* bb = blk + b * kTimeShift;
    if (id >= kNoteOn && id < kNoteOff) {
      any_on = true;
      const int64_t p = id - kNoteOn;
      bb[id] = true;
      bb[id + kPitches] = false;
      if (max_note >= 0) dl[b * kPitches + p] = el[b] + max_note;
      float* cb = cnt + b * (kPitches + 1);
      cb[rec[b * window + c]] -= 1.0f;
      cb[p] += 1.0f;
      rec[b * window + c] = p;
    } else if (id >= kNoteOff && id < kTimeShift) {
      const int64_t p = id - kNoteOff;
      bb[id] = true;
      bb[id - kPitches] = ook[p];
      dl[b * kPitches + p] = never;
    }
    if (max_steps >= 0 && el[b] >= max_steps) dn[b] = true;
  }
  if (any_on) *cur = (c + 1) % window;
}

}  // namespace

TORCH_LIBRARY(midigen, m) {
  m.def("lstm_cell_(Tensor pre, Tensor? table, Tensor? ids, Tensor? row_bias, Tensor? bias, Tensor(a!) c, "
        "Tensor(b!) h, Tensor(c!)? own_in, Tensor(d!)? next_in) -> ()");
  m.def("choose_(Tensor(a!) logits, float inv_temperature, Tensor(b!) blocked, float penalty, Tensor(c!) counts, "
        "Tensor(d!) recent, Tensor(e!) cursor, int max_note, Tensor(f!) deadline, Tensor(g!) elapsed, "
        "Tensor out_of_key, int voices, int top_k, float top_p, Tensor uniform, Tensor(h!) done, int max_steps, "
        "Tensor(i!) out, int t, Tensor(j!) ids, Tensor? grid, Tensor? grid_phase) -> ()");
}

TORCH_LIBRARY_IMPL(midigen, CPU, m) {
  m.impl("lstm_cell_", &lstm_cell_);
  m.impl("choose_", &choose_);
}
