/*
 * abi_test: calls every edgetune C function with valid and invalid arguments (NULLs, freed and
 * foreign handles, wrong struct sizes, a missing file, a corrupt model, bad configs) and checks
 * each status. Exits nonzero on the first unexpected result. Meant to run under valgrind.
 *
 *   abi_test MODEL.gguf DATA.jsonl WORK_DIR [THREADS]
 *
 * DATA.jsonl: any training file the model can use. WORK_DIR: an empty scratch directory.
 * THREADS: worker threads of each session/context [2] (1 under valgrind: spinning pool
 * threads make valgrind's serialized scheduling very slow).
 */
#include "edgetune.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks = 0;
static uint32_t n_threads = 2;

#define EXPECT(call, want)                                                                      \
    do {                                                                                        \
        EdgetuneStatus got_ = (call);                                                           \
        checks++;                                                                               \
        if (got_ != (want)) {                                                                   \
            fprintf(stderr, "abi_test:%d: %s\n  returned %d, expected %d (%s); last error: %s\n", \
                    __LINE__, #call, (int)got_, (int)(want), #want, edgetune_last_error());     \
            exit(1);                                                                            \
        }                                                                                       \
        if (got_ != EDGETUNE_STATUS_OK && edgetune_last_error()[0] == '\0') {                   \
            fprintf(stderr, "abi_test:%d: %s failed without a message\n", __LINE__, #call);    \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

#define REQUIRE(cond)                                                                           \
    do {                                                                                        \
        checks++;                                                                               \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "abi_test:%d: %s is false\n", __LINE__, #cond);                    \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

#define OK EDGETUNE_STATUS_OK
#define ARG EDGETUNE_STATUS_INVALID_ARGUMENT
#define HANDLE EDGETUNE_STATUS_INVALID_HANDLE
#define IO EDGETUNE_STATUS_IO
#define FORMAT EDGETUNE_STATUS_FORMAT
#define DATA EDGETUNE_STATUS_DATA
#define STATE EDGETUNE_STATUS_STATE
#define BUSY EDGETUNE_STATUS_BUSY

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) { buf[n] = 0; *len = (size_t)n; }
    return buf;
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    REQUIRE(f != NULL);
    REQUIRE(fwrite(data, 1, len, f) == len);
    fclose(f);
}

static void path_join(char *out, size_t cap, const char *dir, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

/* A config every session of this test starts from: tiny steps for valgrind. */
static void base_config(EdgetuneTrainConfig *cfg, const char *out_dir) {
    EXPECT(edgetune_train_config_init(cfg, sizeof *cfg), OK);
    cfg->output_dir = out_dir;
    cfg->seq_len = 8;
    cfg->steps = 4;
    cfg->threads = n_threads;
    cfg->rank = 2;
    cfg->targets = "q_proj";
    cfg->shuffle = 0;
    cfg->train_on_prompt = 1; /* short sequences still have targets */
}

struct cb_state { EdgetuneSession *session; int calls; int stop_at; };

static int32_t progress_cb(const EdgetuneProgress *p, void *user) {
    struct cb_state *st = user;
    st->calls++;
    if (p->struct_size != sizeof *p || p->step == 0 || !isfinite(p->loss) || p->total_steps != 4) {
        fprintf(stderr, "abi_test: bad progress (size %u step %llu loss %f)\n", p->struct_size,
                (unsigned long long)p->step, p->loss);
        exit(1);
    }
    /* Inside the run the session is busy; request_stop still works. */
    EdgetuneSessionInfo info;
    info.struct_size = sizeof info;
    EXPECT(edgetune_session_info(st->session, &info), BUSY);
    if (st->calls == st->stop_at) EXPECT(edgetune_session_request_stop(st->session), OK);
    return 0;
}

static int32_t stop_now(const EdgetuneProgress *p, void *user) { (void)p; (void)user; return 1; }

struct text_state { size_t bytes; int pieces; int stop_after; };

static int32_t text_cb(const char *text, size_t len, void *user) {
    struct text_state *st = user;
    REQUIRE(text != NULL && text[len] == '\0');
    st->bytes += len;
    st->pieces++;
    return st->stop_after && st->pieces >= st->stop_after;
}

struct thread_job { EdgetuneModel *model; const char *data; char out[512]; EdgetuneStatus status; };

static void *train_one_step(void *arg) {
    struct thread_job *job = arg;
    EdgetuneTrainConfig cfg;
    EdgetuneSession *s = NULL;
    base_config(&cfg, job->out);
    cfg.threads = 1;
    job->status = edgetune_session_new(job->model, &cfg, &s);
    if (job->status == OK) job->status = edgetune_session_add_data_file(s, job->data);
    if (job->status == OK) job->status = edgetune_session_step(s, NULL);
    if (s) edgetune_session_free(s);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s MODEL.gguf DATA.jsonl WORK_DIR [THREADS]\n", argv[0]);
        return 2;
    }
    if (argc == 5) n_threads = (uint32_t)strtoul(argv[4], NULL, 10);
    const char *model_path = argv[1], *data_path = argv[2], *work = argv[3];
    char out_dir[512], path[512], ckpt_dir[512], adapter_dir[512];
    path_join(out_dir, sizeof out_dir, work, "run");
    path_join(adapter_dir, sizeof adapter_dir, work, "adapter");

    /* Versions and the error string. */
    REQUIRE(edgetune_abi_version() == EDGETUNE_ABI_VERSION);
    REQUIRE(edgetune_version() != NULL && edgetune_version()[0] != '\0');
    REQUIRE(edgetune_last_error() != NULL && edgetune_last_error()[0] == '\0');

    /* Opening models: NULLs, a missing file, a corrupt file, then the real one. */
    EdgetuneModel *model = NULL, *mem_model = NULL;
    EXPECT(edgetune_model_open(NULL, &model), ARG);
    EXPECT(edgetune_model_open(model_path, NULL), ARG);
    path_join(path, sizeof path, work, "missing.gguf");
    EXPECT(edgetune_model_open(path, &model), IO);
    REQUIRE(model == NULL);
    const char corrupt[] = "GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff garbage";
    path_join(path, sizeof path, work, "corrupt.gguf");
    write_file(path, corrupt, sizeof corrupt);
    EXPECT(edgetune_model_open(path, &model), FORMAT);
    write_file(path, "", 0);
    EXPECT(edgetune_model_open(path, &model), FORMAT);
    EXPECT(edgetune_model_open(model_path, &model), OK);
    REQUIRE(model != NULL);
    REQUIRE(edgetune_last_error()[0] == '\0');

    /* From memory: NULL, truncated (corrupt), whole (zero copy; buffer kept until freed). */
    size_t model_len = 0;
    char *model_bytes = read_file(model_path, &model_len);
    REQUIRE(model_bytes != NULL);
    EXPECT(edgetune_model_open_memory(NULL, 10, &mem_model), ARG);
    EXPECT(edgetune_model_open_memory(model_bytes, model_len / 2, &mem_model), FORMAT);
    EXPECT(edgetune_model_open_memory(model_bytes, 3, &mem_model), FORMAT);
    EXPECT(edgetune_model_open_memory(model_bytes, model_len, NULL), ARG);
    EXPECT(edgetune_model_open_memory(model_bytes, model_len, &mem_model), OK);

    /* Model info: bad handle, NULL, wrong size, then both models agree. */
    EdgetuneModelInfo info, mem_info;
    info.struct_size = sizeof info;
    EXPECT(edgetune_model_info(NULL, &info), HANDLE);
    EXPECT(edgetune_model_info(model, NULL), ARG);
    info.struct_size = 3;
    EXPECT(edgetune_model_info(model, &info), ARG);
    info.struct_size = sizeof info + 8;
    EXPECT(edgetune_model_info(model, &info), ARG);
    info.struct_size = sizeof info;
    mem_info.struct_size = sizeof mem_info;
    EXPECT(edgetune_model_info(model, &info), OK);
    EXPECT(edgetune_model_info(mem_model, &mem_info), OK);
    REQUIRE(info.n_layer > 0 && info.n_embd > 0 && info.n_vocab > 0 && info.n_ctx_train > 0);
    REQUIRE(info.n_params > 0 && info.arch != NULL && info.arch[0] != '\0');
    REQUIRE(info.n_layer == mem_info.n_layer && info.n_params == mem_info.n_params);
    REQUIRE(strcmp(info.arch, mem_info.arch) == 0);
    EXPECT(edgetune_model_free(mem_model), OK);
    EXPECT(edgetune_model_free(mem_model), HANDLE);
    EXPECT(edgetune_model_info(mem_model, &mem_info), HANDLE);
    free(model_bytes);

    /* Config init. */
    EdgetuneTrainConfig cfg;
    EXPECT(edgetune_train_config_init(NULL, sizeof cfg), ARG);
    EXPECT(edgetune_train_config_init(&cfg, 3), ARG);
    EXPECT(edgetune_train_config_init(&cfg, sizeof cfg + 1), ARG);
    base_config(&cfg, out_dir);
    REQUIRE(cfg.struct_size == sizeof cfg && cfg.lr > 0 && cfg.method == EDGETUNE_METHOD_LORA);

    /* Bad configs are refused at creation. */
    EdgetuneSession *session = NULL;
    EXPECT(edgetune_session_new(NULL, &cfg, &session), HANDLE);
    EXPECT(edgetune_session_new(model, NULL, &session), ARG);
    EXPECT(edgetune_session_new(model, &cfg, NULL), ARG);
    EdgetuneTrainConfig bad = cfg;
    bad.struct_size = 8;
    EXPECT(edgetune_session_new(model, &bad, &session), ARG);
    bad = cfg; bad.output_dir = NULL;
    EXPECT(edgetune_session_new(model, &bad, &session), ARG);
    bad = cfg; bad.method = 99;
    EXPECT(edgetune_session_new(model, &bad, &session), ARG);
    bad = cfg; bad.optimizer_state = 7;
    EXPECT(edgetune_session_new(model, &bad, &session), ARG);
    bad = cfg; bad.lr_schedule = 9;
    EXPECT(edgetune_session_new(model, &bad, &session), ARG);
    bad = cfg; bad.targets = "not_a_layer";
    EXPECT(edgetune_session_new(model, &bad, &session), ARG);
    bad = cfg; bad.seq_len = 0;
    EXPECT(edgetune_session_new(model, &bad, &session), ARG);
    bad = cfg; bad.shuffle = 2;
    EXPECT(edgetune_session_new(model, &bad, &session), ARG);
    REQUIRE(session == NULL);

    bad = cfg; bad.checkpointing = 5;
    EXPECT(edgetune_session_new(model, &bad, &session), ARG);
    REQUIRE(session == NULL);

    /* Configs whose problem shows when training starts (the learning rate; a memory budget the
     * run cannot fit, refused by the planner before step 0 with the smallest budget that would
     * work): the session is then unusable. */
    bad = cfg; bad.lr = -1.0;
    EXPECT(edgetune_session_new(model, &bad, &session), OK);
    EXPECT(edgetune_session_add_data_file(session, data_path), OK);
    EXPECT(edgetune_session_start(session), ARG);
    EXPECT(edgetune_session_step(session, NULL), STATE);
    EXPECT(edgetune_session_free(session), OK);
    bad = cfg; bad.memory_budget_bytes = 1u << 20;
    EXPECT(edgetune_session_new(model, &bad, &session), OK);
    EXPECT(edgetune_session_add_data_file(session, data_path), OK);
    EXPECT(edgetune_session_start(session), ARG);
    REQUIRE(strstr(edgetune_last_error(), "would work") != NULL);
    EXPECT(edgetune_session_step(session, NULL), STATE);
    EXPECT(edgetune_session_free(session), OK);

    /* A good session: data errors, then data from a file and from memory. */
    EXPECT(edgetune_session_new(model, &cfg, &session), OK);
    EdgetuneModel *wrong_kind = (EdgetuneModel *)session;
    EXPECT(edgetune_model_info(wrong_kind, &info), HANDLE);
    EXPECT(edgetune_session_step(session, NULL), STATE); /* no data yet */
    EXPECT(edgetune_session_add_data_file(session, NULL), ARG);
    EXPECT(edgetune_session_add_data_file(NULL, data_path), HANDLE);
    path_join(path, sizeof path, work, "missing.jsonl");
    EXPECT(edgetune_session_add_data_file(session, path), IO);
    const char *bad_jsonl = "{\"text\": \"ok\"}\n{not json\n";
    EXPECT(edgetune_session_add_data_jsonl(session, bad_jsonl, strlen(bad_jsonl)), DATA);
    REQUIRE(strstr(edgetune_last_error(), ":2") != NULL); /* names the line */
    EXPECT(edgetune_session_add_data_jsonl(session, NULL, 4), ARG);
    const char *good_jsonl =
        "{\"prompt\": \"What is Pebble?\", \"completion\": \"A garden robot by Mossworks.\"}\n"
        "{\"text\": \"Pebble waters the tomatoes every morning.\"}\n";
    EXPECT(edgetune_session_add_data_jsonl(session, good_jsonl, strlen(good_jsonl)), OK);
    EXPECT(edgetune_session_add_data_file(session, data_path), OK);
    path_join(path, sizeof path, work, "no-such-checkpoint");
    EXPECT(edgetune_session_load_checkpoint(session, path), IO);
    EXPECT(edgetune_session_load_checkpoint(session, NULL), ARG);

    EdgetuneSessionInfo sinfo;
    sinfo.struct_size = sizeof sinfo;
    EXPECT(edgetune_session_info(session, NULL), ARG);
    EXPECT(edgetune_session_info(session, &sinfo), OK);
    REQUIRE(sinfo.started == 0 && sinfo.examples >= 3);

    /* Steps. */
    EdgetuneProgress prog;
    prog.struct_size = 5;
    EXPECT(edgetune_session_step(session, &prog), ARG); /* refused before stepping */
    prog.struct_size = sizeof prog;
    EXPECT(edgetune_session_step(session, &prog), OK);
    REQUIRE(prog.step == 1 && prog.total_steps == 4 && isfinite(prog.loss) && prog.tokens > 0);
    EXPECT(edgetune_session_step(session, NULL), OK);
    EXPECT(edgetune_session_info(session, &sinfo), OK);
    REQUIRE(sinfo.started == 1 && sinfo.steps_done == 2 && sinfo.total_steps == 4 && sinfo.n_params > 0);
    EXPECT(edgetune_session_add_data_jsonl(session, good_jsonl, strlen(good_jsonl)), STATE);
    EXPECT(edgetune_session_load_checkpoint(session, out_dir), STATE);

    /* Checkpoint and adapter. */
    const char *dir = NULL;
    EXPECT(edgetune_session_save_checkpoint(NULL, &dir), HANDLE);
    EXPECT(edgetune_session_save_checkpoint(session, &dir), OK);
    REQUIRE(dir != NULL && strstr(dir, "step-2") != NULL);
    snprintf(ckpt_dir, sizeof ckpt_dir, "%s", dir);
    EXPECT(edgetune_session_save_adapter(session, NULL), ARG);
    EXPECT(edgetune_session_save_adapter(session, adapter_dir), OK);

    /* Runs: stopped by request (callback checks BUSY inside), by the callback, then to the end. */
    struct cb_state st = { session, 0, 1 };
    int32_t stopped = -1;
    EXPECT(edgetune_session_run(session, progress_cb, &st, &stopped), OK);
    REQUIRE(stopped == 1 && st.calls == 1);
    REQUIRE(edgetune_last_error()[0] == '\0'); /* the BUSY inside the callback is not reported */
    EXPECT(edgetune_session_run(session, stop_now, NULL, &stopped), OK);
    REQUIRE(stopped == 0); /* that was the last step: finished, not stopped */
    EXPECT(edgetune_session_step(session, NULL), STATE);
    EXPECT(edgetune_session_run(session, NULL, NULL, NULL), OK);
    EXPECT(edgetune_session_request_stop(NULL), HANDLE);

    /* Resume from the step-2 checkpoint in a new session with the same config and data. */
    EdgetuneSession *resumed = NULL;
    EXPECT(edgetune_session_new(model, &cfg, &resumed), OK);
    EXPECT(edgetune_session_add_data_jsonl(resumed, good_jsonl, strlen(good_jsonl)), OK);
    EXPECT(edgetune_session_add_data_file(resumed, data_path), OK);
    EXPECT(edgetune_session_load_checkpoint(resumed, ckpt_dir), OK);
    EXPECT(edgetune_session_step(resumed, &prog), OK);
    REQUIRE(prog.step == 3);
    EXPECT(edgetune_session_free(resumed), OK);

    /* Freed and foreign handles. */
    EXPECT(edgetune_session_free(session), OK);
    EXPECT(edgetune_session_free(session), HANDLE);
    EXPECT(edgetune_session_step(session, NULL), HANDLE);
    EXPECT(edgetune_session_request_stop(session), HANDLE);
    int local = 0;
    EXPECT(edgetune_session_step((EdgetuneSession *)&local, NULL), HANDLE);
    EXPECT(edgetune_model_free((EdgetuneModel *)&local), HANDLE);
    EXPECT(edgetune_session_free(NULL), OK);
    EXPECT(edgetune_model_free(NULL), OK);
    EXPECT(edgetune_inference_free(NULL), OK);

    /* Two sessions on two threads at once. */
    struct thread_job jobs[2];
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) {
        jobs[i].model = model;
        jobs[i].data = data_path;
        snprintf(jobs[i].out, sizeof jobs[i].out, "%s/thread-%d", work, i);
        REQUIRE(pthread_create(&threads[i], NULL, train_one_step, &jobs[i]) == 0);
    }
    for (int i = 0; i < 2; i++) {
        REQUIRE(pthread_join(threads[i], NULL) == 0);
        REQUIRE(jobs[i].status == OK);
    }

    /* Inference. */
    EdgetuneInference *ctx = NULL;
    EXPECT(edgetune_inference_new(NULL, 1, &ctx), HANDLE);
    EXPECT(edgetune_inference_new(model, 1, NULL), ARG);
    EXPECT(edgetune_inference_new(model, n_threads, &ctx), OK);
    path_join(path, sizeof path, work, "no-adapter");
    EXPECT(edgetune_inference_load_adapter(ctx, path), IO);
    EXPECT(edgetune_inference_load_adapter(ctx, adapter_dir), OK);
    EdgetuneGenerateConfig gen;
    EXPECT(edgetune_generate_config_init(&gen, 2), ARG);
    EXPECT(edgetune_generate_config_init(&gen, sizeof gen), OK);
    gen.max_tokens = 4;
    struct text_state ts = { 0, 0, 0 };
    uint32_t n = 0;
    EXPECT(edgetune_generate(ctx, NULL, &gen, text_cb, &ts, &n), ARG);
    EXPECT(edgetune_generate(NULL, "Hello", &gen, text_cb, &ts, &n), HANDLE);
    EdgetuneGenerateConfig bad_gen = gen;
    bad_gen.struct_size = 1000;
    EXPECT(edgetune_generate(ctx, "Hello", &bad_gen, text_cb, &ts, &n), ARG);
    bad_gen = gen; bad_gen.chat = 5;
    EXPECT(edgetune_generate(ctx, "Hello", &bad_gen, text_cb, &ts, &n), ARG);
    EXPECT(edgetune_generate(ctx, "", &gen, text_cb, &ts, &n), ARG); /* empty prompt */
    EXPECT(edgetune_generate(ctx, "Hello", &gen, text_cb, &ts, &n), OK);
    REQUIRE(n >= 1 && n <= 4);
    ts.pieces = 0; ts.stop_after = 1;
    EXPECT(edgetune_generate(ctx, "Hello", NULL, text_cb, &ts, &n), OK);
    REQUIRE(ts.pieces == 1);
    EXPECT(edgetune_generate(ctx, "Hello", &gen, NULL, NULL, NULL), OK);
    EXPECT(edgetune_inference_load_adapter(ctx, NULL), OK); /* back to the base model */
    /* The context keeps the model alive after the caller frees it. */
    EXPECT(edgetune_model_free(model), OK);
    EXPECT(edgetune_model_free(model), HANDLE);
    EXPECT(edgetune_inference_new(model, 1, &ctx), HANDLE);
    EXPECT(edgetune_generate(ctx, "Hello", &gen, text_cb, &ts, &n), OK);
    EXPECT(edgetune_inference_free(ctx), OK);
    EXPECT(edgetune_inference_free(ctx), HANDLE);
    EXPECT(edgetune_generate(ctx, "Hello", &gen, text_cb, &ts, &n), HANDLE);

    printf("abi_test: %d checks passed\n", checks);
    return 0;
}
