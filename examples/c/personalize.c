/*
 * personalize: fine-tune a LoRA adapter on a JSONL file through the edgetune C ABI, with a text
 * progress bar, then generate with it.
 *
 *   personalize MODEL.gguf DATA.jsonl OUT_DIR [STEPS] [SEQ_LEN] [PROMPT] [MAX_TOKENS] [THREADS]
 *
 * Build: see Makefile (static and shared library). Exits nonzero on any failure.
 */
#include "edgetune.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check(EdgetuneStatus s, const char *what) {
    if (s != EDGETUNE_STATUS_OK) {
        fprintf(stderr, "personalize: %s failed (status %d): %s\n", what, (int)s, edgetune_last_error());
        return 0;
    }
    return 1;
}

/* Progress callback: one bar redrawn in place; returning nonzero would stop training. */
static int32_t on_step(const EdgetuneProgress *p, void *user_data) {
    (void)user_data;
    const int width = 30;
    int done = p->total_steps ? (int)(width * p->step / p->total_steps) : width;
    fprintf(stderr, "\rtrain [");
    for (int i = 0; i < width; i++) fputc(i < done ? '=' : ' ', stderr);
    fprintf(stderr, "] %llu/%llu loss %.4f | %.0f tok/s | %llu MiB",
            (unsigned long long)p->step, (unsigned long long)p->total_steps, p->loss,
            p->tokens_per_sec, (unsigned long long)(p->rss_bytes >> 20));
    if (p->step == p->total_steps) fputc('\n', stderr);
    return 0;
}

static int32_t on_text(const char *text, size_t len, void *user_data) {
    (void)user_data;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.gguf DATA.jsonl OUT_DIR [STEPS] [SEQ_LEN] [PROMPT] [MAX_TOKENS] [THREADS]\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1], *data_path = argv[2], *out_dir = argv[3];
    unsigned long steps = argc > 4 ? strtoul(argv[4], NULL, 10) : 20;
    unsigned long seq_len = argc > 5 ? strtoul(argv[5], NULL, 10) : 256;
    const char *prompt = argc > 6 ? argv[6] : "What is Pebble?";
    unsigned long max_tokens = argc > 7 ? strtoul(argv[7], NULL, 10) : 48;
    unsigned long threads = argc > 8 ? strtoul(argv[8], NULL, 10) : 0; /* 0: every core */

    if (edgetune_abi_version() != EDGETUNE_ABI_VERSION) {
        fprintf(stderr, "personalize: header ABI %u, library ABI %u\n", EDGETUNE_ABI_VERSION, edgetune_abi_version());
        return 1;
    }
    fprintf(stderr, "edgetune %s\n", edgetune_version());

    int ok = 0;
    EdgetuneModel *model = NULL;
    EdgetuneSession *session = NULL;
    EdgetuneInference *ctx = NULL;

    if (!check(edgetune_model_open(model_path, &model), "edgetune_model_open")) goto done;
    EdgetuneModelInfo info;
    info.struct_size = sizeof info;
    if (!check(edgetune_model_info(model, &info), "edgetune_model_info")) goto done;
    fprintf(stderr, "model: %s, %u layers, %u embd, %u vocab, %llu parameters\n", info.arch,
            info.n_layer, info.n_embd, info.n_vocab, (unsigned long long)info.n_params);

    EdgetuneTrainConfig cfg;
    if (!check(edgetune_train_config_init(&cfg, sizeof cfg), "edgetune_train_config_init")) goto done;
    cfg.method = EDGETUNE_METHOD_LORA;
    cfg.output_dir = out_dir;
    cfg.targets = "all-linear";
    cfg.rank = 16;
    cfg.alpha = 32;
    cfg.lr = 1e-3;
    cfg.steps = steps;
    cfg.seq_len = (uint32_t)seq_len;
    cfg.batch_size = 1;
    cfg.threads = (uint32_t)threads;
    if (!check(edgetune_session_new(model, &cfg, &session), "edgetune_session_new")) goto done;
    if (!check(edgetune_session_add_data_file(session, data_path), "edgetune_session_add_data_file")) goto done;
    if (!check(edgetune_session_start(session), "edgetune_session_start")) goto done;
    EdgetuneSessionInfo sinfo;
    sinfo.struct_size = sizeof sinfo;
    if (!check(edgetune_session_info(session, &sinfo), "edgetune_session_info")) goto done;
    fprintf(stderr, "training LoRA (%llu parameters) on %llu sequences, %llu steps\n",
            (unsigned long long)sinfo.n_params, (unsigned long long)sinfo.train_sequences,
            (unsigned long long)sinfo.total_steps);
    int32_t stopped = 0;
    if (!check(edgetune_session_run(session, on_step, NULL, &stopped), "edgetune_session_run")) goto done;
    fprintf(stderr, "adapter written to %s%s\n", out_dir, stopped ? " (stopped early)" : "");

    if (!check(edgetune_inference_new(model, (uint32_t)threads, &ctx), "edgetune_inference_new")) goto done;
    if (!check(edgetune_inference_load_adapter(ctx, out_dir), "edgetune_inference_load_adapter")) goto done;
    EdgetuneGenerateConfig gen;
    if (!check(edgetune_generate_config_init(&gen, sizeof gen), "edgetune_generate_config_init")) goto done;
    gen.chat = 1;
    gen.max_tokens = (uint32_t)max_tokens;
    uint32_t n = 0;
    printf("> %s\n", prompt);
    if (!check(edgetune_generate(ctx, prompt, &gen, on_text, NULL, &n), "edgetune_generate")) goto done;
    printf("\n");
    fprintf(stderr, "generated %u tokens\n", n);
    ok = 1;

done:
    /* Free in any order: sessions and contexts keep the model alive. */
    edgetune_inference_free(ctx);
    edgetune_session_free(session);
    edgetune_model_free(model);
    return ok ? 0 : 1;
}
