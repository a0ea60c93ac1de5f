// Names of kernels for messages, records and fault injection. Kernels usually live in
// anonymous namespaces, which dladdr cannot see (they are not in the dynamic symbol table),
// so the object's own ELF symbol table is read from its file, once per object.
#include <cxxabi.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "internal.h"

namespace evit_simt {

namespace {

// Function symbols of one ELF file: st_value → (size, mangled name).
struct SymbolTable {
  std::map<uint64_t, std::pair<uint64_t, std::string>> functions;
};

SymbolTable readSymbols(const char* path) {
  SymbolTable t;
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return t;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof(Elf64_Ehdr)) {
    close(fd);
    return t;
  }
  void* m = mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m == MAP_FAILED) return t;
  const auto* base = static_cast<const unsigned char*>(m);
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
      eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) <= (uint64_t)st.st_size) {
    const auto* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
    for (int i = 0; i < eh->e_shnum; ++i) {
      if (sh[i].sh_type != SHT_SYMTAB && sh[i].sh_type != SHT_DYNSYM) continue;
      if (sh[i].sh_link >= eh->e_shnum) continue;
      const Elf64_Shdr& strs = sh[sh[i].sh_link];
      if (sh[i].sh_offset + sh[i].sh_size > (uint64_t)st.st_size || strs.sh_offset + strs.sh_size > (uint64_t)st.st_size)
        continue;
      const auto* syms = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
      const char* names = reinterpret_cast<const char*>(base + strs.sh_offset);
      for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Sym); ++k) {
        if (ELF64_ST_TYPE(syms[k].st_info) != STT_FUNC || syms[k].st_value == 0) continue;
        if (syms[k].st_name >= strs.sh_size) continue;
        t.functions.emplace(syms[k].st_value, std::make_pair(syms[k].st_size, std::string(names + syms[k].st_name)));
      }
    }
  }
  munmap(m, st.st_size);
  return t;
}

std::string demangle(const std::string& mangled) {
  int status = 0;
  char* d = abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status);
  if (status != 0 || !d) return mangled;
  std::string s(d);
  std::free(d);
  return s;
}

// "void ns::kernel<float, 4>(float const*, int)" → "ns::kernel<float, 4>".
std::string withoutSignature(std::string s) {
  int depth = 0;
  for (size_t i = s.size(); i-- > 0;) {
    const char c = s[i];
    if (c == ')') ++depth;
    if (c == '(' && --depth == 0) {
      // "(anonymous namespace)" is part of the name, not the parameter list.
      if (s.compare(i, 21, "(anonymous namespace)") == 0) continue;
      s.resize(i);
      break;
    }
  }
  if (s.rfind("void ", 0) == 0) s.erase(0, 5);
  return s;
}

std::mutex mu;
std::map<std::string, SymbolTable> tables;
std::map<const void*, std::string> names;

}  // namespace

std::string kernelName(const void* function) {
  std::lock_guard<std::mutex> lock(mu);
  auto known = names.find(function);
  if (known != names.end()) return known->second;
  // The loaded object holding the address: its file ("" is the main program) and load bias.
  struct Found {
    uintptr_t addr;
    std::string file;
    uintptr_t bias;
    bool found;
  } found{reinterpret_cast<uintptr_t>(function), "", 0, false};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        auto& f = *static_cast<Found*>(data);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
          if (ph.p_type == PT_LOAD && f.addr >= lo && f.addr < lo + ph.p_memsz) {
            f.file = info->dlpi_name ? info->dlpi_name : "";
            f.bias = info->dlpi_addr;
            f.found = true;
            return 1;
          }
        }
        return 0;
      },
      &found);
  std::string name;
  if (found.found) {
    const std::string file = found.file.empty() ? "/proc/self/exe" : found.file;
    auto it = tables.find(file);
    if (it == tables.end()) it = tables.emplace(file, readSymbols(file.c_str())).first;
    const auto& fns = it->second.functions;
    const uint64_t key = found.addr - found.bias;
    auto f = fns.upper_bound(key);
    if (f != fns.begin()) {
      --f;
      if (key < f->first + (f->second.first ? f->second.first : 1)) name = demangle(f->second.second);
    }
  }
  if (name.empty()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "kernel@%p", function);
    name = buf;
  } else {
    name = withoutSignature(name);
  }
  names.emplace(function, name);
  return name;
}

}  // namespace evit_simt
