; Reads two integers with scanf, prints a greeting and their sum with printf (linked by gcc).
        global  main
        extern  scanf, printf
        section .data
fmt_in:  db "%lld %lld", 0
fmt_out: db "Hello, world!", 10, "%lld", 10, 0
        section .bss
a:      resq 1
b:      resq 1
        section .text
main:
        sub     rsp, 8
        lea     rdi, [rel fmt_in]
        lea     rsi, [rel a]
        lea     rdx, [rel b]
        xor     eax, eax
        call    scanf wrt ..plt
        cmp     eax, 2
        jne     .fail
        mov     rsi, [rel a]
        add     rsi, [rel b]
        lea     rdi, [rel fmt_out]
        xor     eax, eax
        call    printf wrt ..plt
        xor     eax, eax
        add     rsp, 8
        ret
.fail:
        mov     eax, 1
        add     rsp, 8
        ret
        section .note.GNU-stack noalloc noexec nowrite progbits
