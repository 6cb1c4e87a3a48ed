# gateway/embed.cmake - cmake -P script: IN (a file) -> OUT (a C file defining NAME and NAME_len).
# The status page is built into anymal-gateway so that the binary needs no data files.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x..,){32})" "\\1\n" body "${body}")
file(WRITE ${OUT} "/* generated from ${IN} by gateway/embed.cmake */\n#include <stddef.h>\n"
     "const char ${NAME}[] = {\n${body}0};\nconst size_t ${NAME}_len = ${len};\n")
