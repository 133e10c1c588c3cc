/* table.c - aligned text tables for people reading a terminal: every column
 * as wide as its widest cell, a dashed line under the header. */
#include "ctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add_row(ctl_table *t, const char *const *values)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 8;
        char **cells = realloc(t->cells, cap * t->ncols * sizeof(char *));
        if (!cells)
            return -1;
        t->cells = cells;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t c = 0; c < t->ncols; c++) {
        row[c] = strdup(values[c] ? values[c] : "");
        if (!row[c]) {
            while (c-- > 0)
                free(row[c]);
            return -1;
        }
    }
    t->nrows++;
    return 0;
}

int ctl_table_init(ctl_table *t, size_t ncols, const char *const *header)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    return add_row(t, header);
}

int ctl_table_row(ctl_table *t, const char *const *values)
{
    return add_row(t, values);
}

void ctl_table_print(const ctl_table *t, const char *indent)
{
    size_t width[t->ncols ? t->ncols : 1];
    for (size_t c = 0; c < t->ncols; c++) {
        width[c] = 0;
        for (size_t r = 0; r < t->nrows; r++) {
            size_t l = strlen(t->cells[r * t->ncols + c]);
            if (l > width[c])
                width[c] = l;
        }
    }
    for (size_t r = 0; r < t->nrows; r++) {
        fputs(indent, stdout);
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];
            if (c + 1 < t->ncols)
                printf("%-*s  ", (int)width[c], cell);
            else
                fputs(cell, stdout);
        }
        fputc('\n', stdout);
        if (r == 0) {
            fputs(indent, stdout);
            for (size_t c = 0; c < t->ncols; c++)
                for (size_t i = 0; i < width[c] + (c + 1 < t->ncols ? 2 : 0); i++)
                    fputc(i < width[c] ? '-' : ' ', stdout);
            fputc('\n', stdout);
        }
    }
}

void ctl_table_free(ctl_table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}
