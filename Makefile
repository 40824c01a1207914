# kvtrace / kvanalyze / kvplot
#   make            build bin/kvtrace, bin/kvanalyze, bin/kvplot (and bin/libkvcuda.so, the CUDA plugin)
#   make check      build and run every test (see tests/run.sh)
#   make SANITIZE=1 check   the same under ASan + UBSan (make clean when switching)
#   make demo       trace the default model (SmolLM2-135M-Instruct), analyse it, draw the figures (tools/demo.sh)
#   make bench      run the CPU benchmarks in bench/
#   make fuzz       build the libFuzzer harnesses (clang) and run each for FUZZ_SECONDS
#   make CUDA=0     leave the CUDA backend out (it is also left out when nvcc is missing)
#                   (switching between CUDA=0 and CUDA=1 needs a make clean)
#
# Layout (README.md): one folder per concern, data flowing one way
#   common -> format, kernels -> model, tokenizer -> policy -> tracer, fidelity, analyzer -> plots
# Every .c file of MODULES except <tool>/main.c goes into build/libkv.a; each
# tool is its main.c linked against it; each tests/test_*.c is one Check test
# program.

CC      ?= gcc
comma   := ,
PKGS    := hdf5 openblas libcjson libpcre2-8 libutf8proc libdeflate
# Prefer Debian's OpenMP build of OpenBLAS: it shares libgomp's thread pool
# with our own OpenMP loops (and runs single-threaded inside them) instead of
# a second pool of spinning pthreads competing for the same cores.
OPENBLAS_OMP := $(firstword $(wildcard /usr/lib/*/openblas-openmp/pkgconfig))
PKGCONF := $(if $(OPENBLAS_OMP),PKG_CONFIG_PATH=$(OPENBLAS_OMP):$$PKG_CONFIG_PATH) pkg-config
OPT     ?= -O2
OMPFLAG ?= -fopenmp
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -DH5_USE_110_API -Wall -Wextra $(OMPFLAG) -I. \
           $(shell $(PKGCONF) --cflags $(PKGS))
BLAS_RPATH := $(if $(OPENBLAS_OMP),-Wl$(comma)-rpath$(comma)$(patsubst %/pkgconfig,%,$(OPENBLAS_OMP)))
LDLIBS  += $(shell $(PKGCONF) --libs $(PKGS)) $(OMPFLAG) -lm $(BLAS_RPATH)
TEST_LDLIBS := $(shell pkg-config --libs check)

# libFuzzer builds (make fuzz): clang, coverage + ASan + UBSan, in build-fuzz/
ifeq ($(FUZZ),1)
CFLAGS  += -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
endif

ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDLIBS  += -fsanitize=address,undefined
endif

BUILD   := build
MODULES := common format kernels model tokenizer policy tracer fidelity analyzer plots
LIBSRC  := $(filter-out %/main.c,$(wildcard $(addsuffix /*.c,$(MODULES))))
LIBOBJ  := $(LIBSRC:%.c=$(BUILD)/%.o)

# CUDA backend: built when nvcc is found (CUDA=0 leaves it out). It needs no
# GPU to build; without one at run time the tools use the CPU.
NVCC    ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA    ?= $(if $(NVCC),1,0)
# The toolkit root is asked of nvcc itself: the nvcc on PATH may be a wrapper
# script outside the toolkit (e.g. /usr/local/bin/nvcc). Without cuBLAS and
# cudart next to it the backend is left out rather than failing the link.
# cuBLAS comes from the toolkit, or from PyPI's nvidia-cublas wheel that
# tools/cublas-wheel.sh unpacks into .cache/cublas (CUBLAS_DIR) where the
# toolkit has none.
ifeq ($(CUDA),1)
CUDA_HOME ?= $(shell $(NVCC) --dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^\#\$$ TOP=//p' | head -n 1)
CUDA_LIBDIR := $(firstword $(foreach d,lib64 lib targets/x86_64-linux/lib,\
                 $(if $(wildcard $(CUDA_HOME)/$(d)/libcudart.so),$(CUDA_HOME)/$(d))))
CUBLAS_DIR ?= $(if $(wildcard .cache/cublas/lib/libcublas.so),$(abspath .cache/cublas))
CUBLAS_LIBDIR := $(if $(CUBLAS_DIR),$(CUBLAS_DIR)/lib,$(if $(wildcard $(CUDA_LIBDIR)/libcublas.so),$(CUDA_LIBDIR)))
ifeq ($(and $(CUDA_LIBDIR),$(CUBLAS_LIBDIR)),)
$(warning nvcc found ($(NVCC)) but no libcudart.so and libcublas.so under '$(CUDA_HOME)' (bash tools/cublas-wheel.sh fetches cuBLAS): building without the CUDA backend)
CUDA := 0
endif
endif
ifeq ($(CUDA),1)
NVCCFLAGS ?= -O2 -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
# the backend is a plugin the tools dlopen when a GPU is asked for
CUDA_PLUGIN := bin/libkvcuda.so
CFLAGS  += -DKV_HAVE_CUDA -DKV_CUDA_PLUGIN='"$(abspath $(CUDA_PLUGIN))"'
LDLIBS  += -ldl
endif
TESTSRC := $(wildcard tests/test_*.c)
TESTBIN := $(TESTSRC:tests/%.c=bin/tests/%)
# programs the test scripts drive (tests/<area>/<name>.c -> bin/tests/<name>)
HELPERSRC := $(filter-out tests/fuzz/%,$(wildcard tests/*/*.c))
HELPERBIN := $(foreach f,$(HELPERSRC),bin/tests/$(basename $(notdir $(f))))

# tracer/main.c -> bin/kvtrace, analyzer/main.c -> bin/kvanalyze, plots/main.c -> bin/kvplot
TOOLS := $(if $(wildcard tracer/main.c),bin/kvtrace) \
         $(if $(wildcard analyzer/main.c),bin/kvanalyze) \
         $(if $(wildcard plots/main.c),bin/kvplot)

.PHONY: all check bench clean deps demo fuzz fuzz-build
# keep test and bench objects (no "rm build/tests/..." after the test summary)
.SECONDARY:
all: $(TOOLS) $(CUDA_PLUGIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# The softmax and column-sum loops vectorise only when the compiler may
# if-convert float comparisons (it may not assume they never trap otherwise);
# the results are unchanged: nothing here reads the floating-point flags.
$(BUILD)/kernels/cpu.o: CFLAGS += -fno-trapping-math

$(BUILD)/kernels/cuda.o: kernels/cuda.cu kernels/kernels.h kernels/bench_hooks.h common/dtype.h common/error.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -I. $(if $(CUBLAS_DIR),-I$(CUBLAS_DIR)/include) -Xcompiler -fPIC,-Wall,-Wextra -c $< -o $@

# the plugin carries its own copies of the two small C modules it calls
$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT) -std=c11 -D_GNU_SOURCE -Wall -Wextra -fPIC -I. -MMD -MP -c $< -o $@

$(CUDA_PLUGIN): $(BUILD)/kernels/cuda.o $(BUILD)/pic/common/error.o $(BUILD)/pic/common/dtype.o
	@mkdir -p $(dir $@)
	$(NVCC) -shared $^ -o $@ -L$(CUBLAS_LIBDIR) -L$(CUDA_LIBDIR) -lcublas -lcudart \
	    -Xlinker -rpath=$(CUDA_LIBDIR)$(if $(CUBLAS_DIR),:$(CUBLAS_LIBDIR))

$(BUILD)/libkv.a: $(LIBOBJ)
	@rm -f $@
	ar rcs $@ $^

bin/kvtrace: $(BUILD)/tracer/main.o $(BUILD)/libkv.a
	@mkdir -p bin
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

bin/kvanalyze: $(BUILD)/analyzer/main.o $(BUILD)/libkv.a
	@mkdir -p bin
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

bin/kvplot: $(BUILD)/plots/main.o $(BUILD)/libkv.a
	@mkdir -p bin
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

bin/tests/%: $(BUILD)/tests/%.o $(BUILD)/libkv.a
	@mkdir -p bin/tests
	$(CC) $(CFLAGS) $^ -o $@ $(TEST_LDLIBS) $(LDLIBS)

$(BUILD)/tests/%.o: CFLAGS += $(shell pkg-config --cflags check)

define helper_rule
bin/tests/$(basename $(notdir $(1))): $(BUILD)/$(1:.c=.o) $(BUILD)/libkv.a
	@mkdir -p bin/tests
	$$(CC) $$(CFLAGS) $$^ -o $$@ $$(LDLIBS)
endef
$(foreach f,$(HELPERSRC),$(eval $(call helper_rule,$(f))))

bin/bench/%: $(BUILD)/bench/%.o $(BUILD)/libkv.a
	@mkdir -p bin/bench
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

BENCHBIN := $(patsubst bench/%.c,bin/bench/%,$(wildcard bench/*.c))

FUZZSRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZBIN := $(FUZZSRC:tests/fuzz/%.c=bin/fuzz/%)
bin/fuzz/%: $(BUILD)/tests/fuzz/%.o $(BUILD)/libkv.a
	@mkdir -p bin/fuzz
	$(CC) $(CFLAGS) -fsanitize=fuzzer $^ -o $@ $(LDLIBS)

# fuzzers: built with clang into build-fuzz/ (the normal build is untouched)
fuzz-build:
	$(MAKE) FUZZ=1 CC=clang OMPFLAG=-fopenmp=libgomp CUDA=0 BUILD=build-fuzz $(FUZZBIN)

# FUZZ_SECONDS per fuzzer (default 60); corpora in tests/fuzz/corpus/<name>
fuzz: fuzz-build
	bash tests/fuzz/run.sh $(or $(FUZZ_SECONDS),60)

check: $(TOOLS) $(CUDA_PLUGIN) $(TESTBIN) $(HELPERBIN)
	bash tests/run.sh

bench: $(TOOLS) $(BENCHBIN)
	bash bench/run.sh

deps:
	bash tools/install-deps.sh

demo: $(TOOLS)
	bash tools/demo.sh

clean:
	rm -rf $(BUILD) build-fuzz bin

-include $(LIBOBJ:.o=.d) $(BUILD)/tracer/main.d $(BUILD)/analyzer/main.d $(BUILD)/plots/main.d \
         $(wildcard $(BUILD)/tests/*.d $(BUILD)/tests/*/*.d $(BUILD)/bench/*.d $(BUILD)/pic/common/*.d)
