#include "format/trace.h"

#include <string.h>

int kv_prompt_id_valid(const char *id) {
    size_t n = strlen(id);
    if (n == 0 || n > KV_PROMPT_ID_MAX) return 0;
    if (!strcmp(id, ".") || !strcmp(id, "..")) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
        if (!ok) return 0;
    }
    return 1;
}
