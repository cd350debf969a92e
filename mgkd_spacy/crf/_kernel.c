/* Exact linear-chain CRF decoding and log Z on the CPU, one sentence at a time, in float64 (mgkd_spacy.crf._kernel).
 *
 * k-best Viterbi: Huang & Chiang's lazy k-best ("Better k-best parsing", 2005, algorithm 3) on the chain. A forward
 * Viterbi pass gives every (position, tag) node its best prefix; the r-th best prefix of a node is then built only
 * when a later node asks for it, from a heap of candidates (previous tag a, rank j of a's prefix): the runner-up
 * first, the first prefix of every other previous tag once the runner-up is taken (none of them can beat it), and
 * for each candidate taken, the next rank of the same previous tag. A root node after the last position (edges: the
 * end scores) yields the K best sequences in order. Each (a, j) enters a node's heap once, so no sequence is
 * returned twice; -inf candidates (forbidden moves) never enter, so a sentence with fewer than K allowed sequences
 * returns fewer. K = 1 is the forward pass alone.
 *
 * log Z: the scaled forward algorithm of ops._scaled_log_partition, with the same exactness check per sentence and
 * the same fallback to the log-space forward algorithm for the sentences that fail it.
 *
 * Called from mgkd_spacy/crf/ops.py, which validates the inputs and uses its torch code instead on CUDA, for
 * gradients, and when this module is not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Spread (nats) below a row's maximum that the scaled forward algorithm accepts: ops.SCALED_SPREAD. */
#define SCALED_SPREAD 230.0

/* a node's heap: not started, holding the runner-up (the other first prefixes wait), complete, exhausted */
enum { FRESH = 0, RUNNER = 1, OPEN = 2, DONE = 3 };

typedef struct {
    double score;
    int32_t pred; /* tag at the previous position */
    int32_t rank; /* rank of that tag's prefix */
} Entry;

/* A pending request: the prefixes of tag `tag` (at the request's position) up to rank `rank`. */
typedef struct {
    int32_t tag, rank;
} Ask;

typedef struct {
    /* one sentence's inputs: emissions (n, L) row-major; into[y * L + a] scores tag y after tag a */
    const double *emissions, *into, *start, *end;
    Py_ssize_t n_tags, k, n, nodes;
    /* per node t * L + y (the root is node n * L): its prefixes best first (rank-major, see PREFIX), its best
     * prefix's score alone, its runner-up first prefix (the best from another previous tag), and its candidate heap */
    Entry *found, *runner, *heap;
    double *first;
    int32_t *back; /* the best prefix's previous tag, compact for tracing */
    int32_t *count, *heap_size;
    uint8_t *state;
    /* pending requests, one per position 0..n (see reach) */
    Ask *chain;
} Search;

/* The rank-r prefix of a node. Rank-major, so that the best prefixes, which most steps of a trace follow, share
 * cache lines. */
#define PREFIX(s, node, r) ((s)->found[(r) * (s)->nodes + (node)])

static void heap_push(Entry *heap, int32_t *size, Entry item) {
    Py_ssize_t i = (*size)++;
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (heap[parent].score >= item.score) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = item;
}

static Entry heap_pop(Entry *heap, int32_t *size) {
    Entry top = heap[0], last = heap[--(*size)];
    Py_ssize_t i = 0, n = *size;
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && heap[child + 1].score > heap[child].score) child++;
        if (last.score >= heap[child].score) break;
        heap[i] = heap[child];
        i = child;
    }
    if (n > 0) heap[i] = last;
    return top;
}

/* The scores into node (t, y): returns into[a] for each previous tag a and sets the emission added once (the root
 * t == n: the end scores, no emission). */
static const double *edge(const Search *s, Py_ssize_t t, Py_ssize_t y, double *emit) {
    if (t == s->n) {
        *emit = 0.0;
        return s->end;
    }
    *emit = s->emissions[t * s->n_tags + y];
    return s->into + y * s->n_tags;
}

/* Push the first prefix of every previous tag except `skip` and `also` into node (t, y)'s heap. */
static void push_first_prefixes(Search *s, Py_ssize_t t, Py_ssize_t y, Py_ssize_t skip, Py_ssize_t also) {
    Py_ssize_t n_tags = s->n_tags, node = t * n_tags + y;
    double emit;
    const double *into = edge(s, t, y, &emit), *prev = s->first + (t - 1) * n_tags;
    for (Py_ssize_t a = 0; a < n_tags; a++) {
        double score = prev[a] + into[a] + emit;
        if (a != skip && a != also && score > -INFINITY)
            heap_push(s->heap + node * (n_tags + 1), &s->heap_size[node], (Entry){score, (int32_t)a, 0});
    }
}

/* Build prefixes of node (t, y) up to rank r; returns whether rank r exists.
 *
 * A node's next prefix first needs the next prefix of the node at t - 1 that its last prefix came from, so pending
 * requests form a chain down the positions. The chain lives in `s->chain` (one request per position), not on the C
 * stack, which recursion would overflow on sentences of many thousand tokens. */
static int reach(Search *s, Py_ssize_t t, Py_ssize_t y, Py_ssize_t r) {
    Py_ssize_t n_tags = s->n_tags, at = t;
    Ask *chain = s->chain;
    chain[t] = (Ask){(int32_t)y, (int32_t)r};
    /* answered: the request at at - 1 has just been settled, with `answer` */
    int answer = 0, answered = 0;
    for (;;) {
        Py_ssize_t tag = chain[at].tag, node = at * n_tags + tag;
        Entry *heap = s->heap + node * (n_tags + 1);
        double emit;
        const double *into = edge(s, at, tag, &emit);
        if (answered) {
            /* push the next rank of the previous tag that the last prefix came from, if it exists; take the best */
            Entry last = PREFIX(s, node, s->count[node] - 1);
            answered = 0;
            if (answer) {
                double score = PREFIX(s, (at - 1) * n_tags + last.pred, last.rank + 1).score + into[last.pred] + emit;
                if (score > -INFINITY) heap_push(heap, &s->heap_size[node], (Entry){score, last.pred, last.rank + 1});
            }
            if (s->heap_size[node] == 0) {
                s->state[node] = DONE;
            } else {
                Entry taken = heap_pop(heap, &s->heap_size[node]);
                PREFIX(s, node, s->count[node]++) = taken;
                if (s->state[node] == RUNNER && taken.rank == 0 && taken.pred == s->runner[node].pred) {
                    push_first_prefixes(s, at, tag, PREFIX(s, node, 0).pred, taken.pred);
                    s->state[node] = OPEN;
                }
            }
        }
        if (s->count[node] > chain[at].rank || s->state[node] == DONE) {
            answer = s->count[node] > chain[at].rank;
            if (at == t) return answer;
            at++;
            answered = 1;
            continue;
        }
        if (s->state[node] == FRESH) {
            /* the runner-up: the best first prefix from another previous tag (ties to the lower tag) */
            const double *prev = s->first + (at - 1) * n_tags;
            Entry runner = {-INFINITY, -1, 0};
            for (Py_ssize_t a = 0; a < n_tags; a++) {
                double score = prev[a] + into[a];
                if (score > runner.score && a != PREFIX(s, node, 0).pred) runner = (Entry){score, (int32_t)a, 0};
            }
            runner.score += emit;
            s->runner[node] = runner;
            if (runner.score > -INFINITY) heap_push(heap, &s->heap_size[node], runner);
            s->state[node] = runner.score > -INFINITY ? RUNNER : OPEN;
        }
        Entry last = PREFIX(s, node, s->count[node] - 1);
        chain[--at] = (Ask){last.pred, last.rank + 1};
    }
}

/* Forward Viterbi: the best prefix of every node and of the root, its score also in `first` (-inf: none, and the
 * node is DONE). Ties go to the lower previous tag. */
static void forward(Search *s) {
    Py_ssize_t n_tags = s->n_tags, n = s->n;
    for (Py_ssize_t t = 0; t <= n; t++) {
        for (Py_ssize_t y = 0; y < (t == n ? 1 : n_tags); y++) {
            Py_ssize_t node = t * n_tags + y;
            Entry best = {-INFINITY, -1, 0};
            if (t == 0) {
                best.score = s->start[y] + s->emissions[y];
            } else {
                double emit;
                const double *into = edge(s, t, y, &emit), *prev = s->first + (t - 1) * n_tags;
                for (Py_ssize_t a = 0; a < n_tags; a++) {
                    double score = prev[a] + into[a];
                    if (score > best.score) {
                        best.score = score;
                        best.pred = (int32_t)a;
                    }
                }
                best.score += emit;
            }
            s->first[node] = best.score;
            s->back[node] = best.pred;
            s->heap_size[node] = 0;
            if (best.score > -INFINITY) {
                PREFIX(s, node, 0) = best;
                s->count[node] = 1;
                /* position 0 has exactly one prefix per tag */
                s->state[node] = t == 0 ? DONE : FRESH;
            } else {
                s->count[node] = 0;
                s->state[node] = DONE;
            }
        }
    }
}

/* K best sequences of one sentence (length n >= 1) into scores (K,) and tags (K, T): -inf and -1 in the rows past
 * the sentence's allowed sequences, -1 beyond its length. */
static void search_sentence(Search *s, Py_ssize_t n_tokens, double *scores, int64_t *tags) {
    Py_ssize_t n_tags = s->n_tags, n = s->n, r = 0;
    forward(s);
    for (; r < s->k && reach(s, n, 0, r); r++) {
        int64_t *row = tags + r * n_tokens;
        Entry step = PREFIX(s, n * n_tags, r);
        Py_ssize_t t = n - 1, tag;
        scores[r] = step.score;
        /* ranked prefixes until the path joins a best prefix (rank 0), then the best prefixes' back pointers */
        for (; step.rank > 0; t--) {
            row[t] = step.pred;
            step = PREFIX(s, t * n_tags + step.pred, step.rank);
        }
        for (tag = step.pred; t >= 0; t--) {
            row[t] = tag;
            tag = s->back[t * n_tags + tag];
        }
        for (t = n; t < n_tokens; t++) row[t] = -1;
    }
    for (; r < s->k; r++) {
        scores[r] = -INFINITY;
        for (Py_ssize_t t = 0; t < n_tokens; t++) tags[r * n_tokens + t] = -1;
    }
}

/* log(sum(exp(x))) over n values; -inf if all are -inf. */
static double log_sum_exp(const double *x, Py_ssize_t n) {
    double top = -INFINITY, total = 0.0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (x[i] > top) top = x[i];
    if (top == -INFINITY) return -INFINITY;
    for (Py_ssize_t i = 0; i < n; i++) total += exp(x[i] - top);
    return top + log(total);
}

/* log Z of one sentence (n >= 1) by the forward algorithm in log space; exact for any finite scores. */
static double logspace_log_z(const double *emissions, Py_ssize_t n, const double *moves, const double *start,
                             const double *end, Py_ssize_t n_tags, double *alpha, double *next, double *terms) {
    for (Py_ssize_t y = 0; y < n_tags; y++) alpha[y] = start[y] + emissions[y];
    for (Py_ssize_t t = 1; t < n; t++) {
        for (Py_ssize_t y = 0; y < n_tags; y++) {
            for (Py_ssize_t a = 0; a < n_tags; a++) terms[a] = alpha[a] + moves[a * n_tags + y];
            next[y] = emissions[t * n_tags + y] + log_sum_exp(terms, n_tags);
        }
        double *swap = alpha;
        alpha = next;
        next = swap;
    }
    for (Py_ssize_t y = 0; y < n_tags; y++) terms[y] = alpha[y] + end[y];
    return log_sum_exp(terms, n_tags);
}

/* log Z of one sentence (n >= 1) by the scaled forward algorithm: the forward vector as probabilities scaled to a
 * maximum of 1, times `factors` = exp(moves - into) and exp(emissions + into - row maximum) at every step. Returns
 * NAN where that is not exact (a factor or vector entry more than SCALED_SPREAD nats below its maximum, or no
 * allowed sequence), for the log-space fallback. */
static double scaled_log_z(const double *emissions, Py_ssize_t n, const double *factors, const double *into,
                           const double *start, const double *end, Py_ssize_t n_tags, double *vector, double *next,
                           double *scaled) {
    double log_scale = 0.0;
    for (Py_ssize_t t = 0; t < n; t++) {
        double top = -INFINITY, norm = 0.0;
        for (Py_ssize_t y = 0; y < n_tags; y++) {
            scaled[y] = (t == 0 ? start[y] : into[y]) + emissions[t * n_tags + y];
            if (scaled[y] > top) top = scaled[y];
        }
        if (top == -INFINITY) return NAN;
        for (Py_ssize_t y = 0; y < n_tags; y++) {
            double gap = scaled[y] - top;
            if (gap < -SCALED_SPREAD && gap > -INFINITY) return NAN;
            scaled[y] = exp(gap);
            next[y] = t == 0 ? 1.0 : 0.0;
        }
        for (Py_ssize_t a = 0; t > 0 && a < n_tags; a++) {
            const double weight = vector[a], *row = factors + a * n_tags;
            if (weight == 0.0) continue;
            for (Py_ssize_t y = 0; y < n_tags; y++) next[y] += weight * row[y];
        }
        for (Py_ssize_t y = 0; y < n_tags; y++) {
            next[y] *= scaled[y];
            if (next[y] > norm) norm = next[y];
        }
        if (norm == 0.0) return NAN;
        for (Py_ssize_t y = 0; y < n_tags; y++) {
            next[y] /= norm;
            if (next[y] > 0.0 && next[y] < exp(-SCALED_SPREAD)) return NAN;
        }
        log_scale += top + log(norm);
        double *swap = vector;
        vector = next;
        next = swap;
    }
    for (Py_ssize_t y = 0; y < n_tags; y++) scaled[y] = vector[y] > 0.0 ? log(vector[y]) + end[y] : -INFINITY;
    double log_z = log_sum_exp(scaled, n_tags);
    return isfinite(log_z) ? log_scale + log_z : NAN;
}

/* What log Z needs across a batch: the moves (L, L) a -> y, the scaled algorithm's factors exp(moves - into) and
 * largest move into each tag (0 if none), whether every allowed move lies within SCALED_SPREAD of it (else no
 * sentence takes the scaled path), and three (L,) work vectors; all in one block. */
typedef struct {
    const double *start, *end;
    double *block, *moves, *factors, *into, *vector, *next, *scaled;
    Py_ssize_t n_tags;
    int spread_ok;
} Partition;

/* Fill z from moves[a * a_stride + y * y_stride] (so a transposed copy serves too); 0 when out of memory. */
static int partition_init(Partition *z, const double *moves, Py_ssize_t a_stride, Py_ssize_t y_stride,
                          const double *start, const double *end, Py_ssize_t n_tags) {
    Py_ssize_t square = n_tags * n_tags;
    double *block = malloc(sizeof(double) * (2 * square + 4 * n_tags));
    if (!block) return 0;
    *z = (Partition){.start = start, .end = end, .block = block, .moves = block, .factors = block + square,
                     .into = block + 2 * square, .n_tags = n_tags, .spread_ok = 1};
    z->vector = z->into + n_tags;
    z->next = z->vector + n_tags;
    z->scaled = z->next + n_tags;
    for (Py_ssize_t a = 0; a < n_tags; a++)
        for (Py_ssize_t y = 0; y < n_tags; y++) z->moves[a * n_tags + y] = moves[a * a_stride + y * y_stride];
    for (Py_ssize_t y = 0; y < n_tags; y++) {
        double top = -INFINITY;
        for (Py_ssize_t a = 0; a < n_tags; a++)
            if (z->moves[a * n_tags + y] > top) top = z->moves[a * n_tags + y];
        z->into[y] = isfinite(top) ? top : 0.0;
        for (Py_ssize_t a = 0; a < n_tags; a++) {
            double gap = z->moves[a * n_tags + y] - z->into[y];
            z->factors[a * n_tags + y] = exp(gap);
            if (gap < -SCALED_SPREAD && gap > -INFINITY) z->spread_ok = 0;
        }
    }
    return 1;
}

/* log Z of one sentence of length n (0 for n = 0): the scaled forward algorithm, or log space where it is not exact
 * (then *fell_back = 1). */
static double partition_log_z(const Partition *z, const double *emissions, Py_ssize_t n, uint8_t *fell_back) {
    Py_ssize_t n_tags = z->n_tags;
    double value = n == 0 ? 0.0
                   : z->spread_ok ? scaled_log_z(emissions, n, z->factors, z->into, z->start, z->end, n_tags,
                                                 z->vector, z->next, z->scaled)
                                  : NAN;
    *fell_back = isnan(value);
    if (!*fell_back) return value;
    return logspace_log_z(emissions, n, z->moves, z->start, z->end, n_tags, z->vector, z->next, z->scaled);
}

static int check_size(Py_buffer *view, Py_ssize_t items, Py_ssize_t itemsize, const char *name) {
    if (view->len != items * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes; expected %zd", name, view->len, items * itemsize);
        return 0;
    }
    return 1;
}

/* The checks both entry points share: buffer sizes of a (B, T, L) batch and its potentials, lengths in [0, T]. */
static int check_batch(Py_buffer *emissions, Py_buffer *lengths, Py_buffer *moves, Py_buffer *start, Py_buffer *end,
                       Py_ssize_t n_batch, Py_ssize_t n_tokens, Py_ssize_t n_tags) {
    if (n_batch < 0 || n_tokens < 0 || n_tags < 1) {
        PyErr_SetString(PyExc_ValueError, "sizes must be non-negative, with at least one tag");
        return 0;
    }
    if (!check_size(emissions, n_batch * n_tokens * n_tags, 8, "emissions") ||
        !check_size(lengths, n_batch, 8, "lengths") || !check_size(moves, n_tags * n_tags, 8, "transitions") ||
        !check_size(start, n_tags, 8, "start") || !check_size(end, n_tags, 8, "end"))
        return 0;
    const int64_t *length = lengths->buf;
    for (Py_ssize_t b = 0; b < n_batch; b++) {
        if (length[b] < 0 || length[b] > n_tokens) {
            PyErr_Format(PyExc_ValueError, "length %lld of sentence %zd is outside [0, %zd]", (long long)length[b], b,
                         n_tokens);
            return 0;
        }
    }
    return 1;
}

static PyObject *kbest(PyObject *self, PyObject *args) {
    Py_buffer emissions, lengths, into, start, end, scores, tags, log_z = {0}, fell_back = {0};
    Py_ssize_t n_batch, n_tokens, n_tags, k;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*w*w*nnnn|w*w*", &emissions, &lengths, &into, &start, &end, &scores, &tags,
                          &n_batch, &n_tokens, &n_tags, &k, &log_z, &fell_back))
        return NULL;
    PyObject *result = NULL;
    Search s = {0};
    Partition z = {0};
    if (!check_batch(&emissions, &lengths, &into, &start, &end, n_batch, n_tokens, n_tags)) goto release;
    if (k < 1) {
        PyErr_SetString(PyExc_ValueError, "k must be >= 1");
        goto release;
    }
    if (!check_size(&scores, n_batch * k, 8, "scores") || !check_size(&tags, n_batch * k * n_tokens, 8, "tags"))
        goto release;
    int with_log_z = log_z.obj != NULL;
    if (with_log_z && (!check_size(&log_z, n_batch, 8, "log_z") || !check_size(&fell_back, n_batch, 1, "fell_back")))
        goto release;
    if (with_log_z && !partition_init(&z, into.buf, 1, n_tags, start.buf, end.buf, n_tags)) {
        PyErr_NoMemory();
        goto release;
    }
    const int64_t *length = lengths.buf;
    Py_ssize_t nodes = n_tokens * n_tags + 1;
    s = (Search){.into = into.buf, .start = start.buf, .end = end.buf, .n_tags = n_tags, .k = k, .nodes = nodes};
    s.found = malloc(sizeof(Entry) * nodes * k);
    s.runner = malloc(sizeof(Entry) * nodes);
    s.heap = malloc(sizeof(Entry) * nodes * (n_tags + 1));
    s.count = malloc(sizeof(int32_t) * nodes);
    s.heap_size = malloc(sizeof(int32_t) * nodes);
    s.state = malloc(nodes);
    s.first = malloc(sizeof(double) * nodes);
    s.back = malloc(sizeof(int32_t) * nodes);
    s.chain = malloc(sizeof(Ask) * (n_tokens + 1));
    if (!s.found || !s.runner || !s.heap || !s.count || !s.heap_size || !s.state || !s.first || !s.back || !s.chain) {
        PyErr_NoMemory();
        goto release;
    }
    double *score_out = scores.buf;
    int64_t *tag_out = tags.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < n_batch; b++) {
        const double *sentence = (const double *)emissions.buf + b * n_tokens * n_tags;
        if (with_log_z)
            ((double *)log_z.buf)[b] = partition_log_z(&z, sentence, length[b], (uint8_t *)fell_back.buf + b);
        if (length[b] == 0) {
            /* the one, empty, sequence */
            for (Py_ssize_t i = 0; i < k; i++) score_out[b * k + i] = i == 0 ? 0.0 : -INFINITY;
            for (Py_ssize_t i = 0; i < k * n_tokens; i++) tag_out[b * k * n_tokens + i] = -1;
            continue;
        }
        s.emissions = sentence;
        s.n = length[b];
        search_sentence(&s, n_tokens, score_out + b * k, tag_out + b * k * n_tokens);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
release:
    free(s.found);
    free(s.runner);
    free(s.heap);
    free(s.count);
    free(s.heap_size);
    free(s.state);
    free(s.first);
    free(s.back);
    free(s.chain);
    free(z.block);
    PyBuffer_Release(&emissions);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&into);
    PyBuffer_Release(&start);
    PyBuffer_Release(&end);
    PyBuffer_Release(&scores);
    PyBuffer_Release(&tags);
    PyBuffer_Release(&log_z);
    PyBuffer_Release(&fell_back);
    return result;
}

static PyObject *log_partition(PyObject *self, PyObject *args) {
    Py_buffer emissions, lengths, moves, start, end, log_z, fell_back;
    Py_ssize_t n_batch, n_tokens, n_tags;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*w*w*nnn", &emissions, &lengths, &moves, &start, &end, &log_z, &fell_back,
                          &n_batch, &n_tokens, &n_tags))
        return NULL;
    PyObject *result = NULL;
    Partition z = {0};
    if (!check_batch(&emissions, &lengths, &moves, &start, &end, n_batch, n_tokens, n_tags) ||
        !check_size(&log_z, n_batch, 8, "log_z") || !check_size(&fell_back, n_batch, 1, "fell_back"))
        goto release;
    if (!partition_init(&z, moves.buf, n_tags, 1, start.buf, end.buf, n_tags)) {
        PyErr_NoMemory();
        goto release;
    }
    const int64_t *length = lengths.buf;
    double *out = log_z.buf;
    uint8_t *redo = fell_back.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < n_batch; b++)
        out[b] = partition_log_z(&z, (const double *)emissions.buf + b * n_tokens * n_tags, length[b], &redo[b]);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
release:
    free(z.block);
    PyBuffer_Release(&emissions);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&moves);
    PyBuffer_Release(&start);
    PyBuffer_Release(&end);
    PyBuffer_Release(&log_z);
    PyBuffer_Release(&fell_back);
    return result;
}

static PyMethodDef methods[] = {
    {"kbest", kbest, METH_VARARGS,
     "kbest(emissions, lengths, into, start, end, scores, tags, n_batch, n_tokens, n_tags, k[, log_z, fell_back]).\n\n"
     "Inputs are C-contiguous float64 buffers (emissions (B, T, L), into (L, L) = transitions transposed, start and\n"
     "end (L,)) and int64 lengths (B,); writes float64 scores (B, K), best first, -inf where a sentence has no\n"
     "such sequence, and int64 tags (B, K, T), -1 beyond the sentence and in those rows. A sentence of length 0\n"
     "has one sequence, of score 0. With the optional log_z and fell_back buffers, also writes what log_partition\n"
     "would, in the same pass over the batch."},
    {"log_partition", log_partition, METH_VARARGS,
     "log_partition(emissions, lengths, transitions, start, end, log_z, fell_back, n_batch, n_tokens, n_tags).\n\n"
     "Inputs as for kbest, but transitions (L, L) as they are; writes float64 log Z (B,) (0 for length 0, -inf\n"
     "where no sequence is allowed) and uint8 fell_back (B,), 1 where the sentence was recomputed in log space."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel", "Exact CRF decoding and log Z on the CPU (C).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
