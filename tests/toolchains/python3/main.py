a, b = map(int, input().split())
print("Hello, world!")
print(a + b)
