blocks = []
while True:
    blocks.append(b"x" * (16 << 20))  # written, so every page is charged
