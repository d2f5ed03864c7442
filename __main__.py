from reasonrl.core.cli import main

if __name__ == "__main__":  # importing the module (docs tools inspect every module) runs nothing
    raise SystemExit(main())
