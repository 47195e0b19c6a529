from stablegate.cli import main

main()
